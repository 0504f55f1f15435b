"""DVC stage `train`: train one model variant on the suite's source dataset.

    python stages/train.py --variant full --data data/synth \
        --spsd-index data/spsd/channel_index.json [--clip-checkpoint data/clip/drseg-tiny-clip.pt] \
        --out data/runs/full --reports reports/train/full

Params: ``train`` (loop, data and device settings; docs/engine.md), ``model`` (preset +
ModelConfig fields) and ``variants.<variant>`` (ModelConfig overrides of this variant, plus an
optional ``train:`` dict of training overrides). ``train.nproc > 1`` re-launches this script
under ``torch.distributed.run`` with that many processes (one per GPU on CUDA); under an
outer ``torchrun`` (several machines) it joins the given process group instead.

Writes ``<out>/model_final.pt`` (drseg-model/1), keeps ``<out>/last.pt`` while training (a
killed run resumes from it), ``<reports>/loss.csv`` (iteration, loss, lr) and
``<reports>/train.json`` (final loss, iterations, wall time). MLflow: run ``train@<variant>``
with the params, the loss curve, the checkpoint path and the SPSD index used.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning (numerics unchanged): on a busy 2-core machine
# spinning threads starve each other (see stages/pretrain.py). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_params, section, setup_logging  # noqa: E402  (puts the root on sys.path)

from drseg.errors import DrsegInputError  # noqa: E402

log = logging.getLogger("drseg.train")

#: keys of the ``train`` block that choose the data rather than the loop
DATA_KEYS = ("dataset", "split", "class_list_variant", "keep_state")


def variant_overrides(params: dict, variant: str) -> tuple[dict, dict]:
    """``(model overrides, train overrides)`` of ``variants.<variant>`` (empty when absent).

    Raises:
        DrsegInputError: the block is not a mapping.
    """
    block = (params.get("variants") or {}).get(variant)
    if block is None:
        return {}, {}
    if not isinstance(block, dict):
        raise DrsegInputError(f"params.yaml: variants.{variant} must be a mapping of overrides")
    block = dict(block)
    train_ov = block.pop("train", None) or {}
    if not isinstance(train_ov, dict):
        raise DrsegInputError(f"params.yaml: variants.{variant}.train must be a mapping")
    return block, train_ov


def resolve_model_config(params: dict, variant: str, clip_checkpoint: str | None = None):
    """The ModelConfig of a variant: ``model`` block (preset + fields), then the variant's
    overrides, then the CLIP weights (``model.clip_checkpoint`` when the resolved params set
    it, e.g. through a paper profile, else the command-line path of the tiny CLIP).

    SPSD's semantic ratio (Eq. 5) is applied here, per training run: a DR-Seg variant that
    slices by the channel index and sets no ``rho`` of its own takes ``spsd.rho``, so
    ``dvc exp run -S spsd.rho=0.4`` retrains exactly the variants that use that ratio.
    """
    from _common import clip_checkpoint as choose_clip

    from drseg.models.drseg import make_config

    block = dict(section(params, "model"))
    preset = block.pop("preset", "tiny")
    model_ov, _ = variant_overrides(params, variant)
    block.update(model_ov)
    chosen = choose_clip({"model": block}, clip_checkpoint)
    if chosen:
        block["clip_checkpoint"] = chosen
    cfg = make_config(preset, block)
    if cfg.rho is None and cfg.variant == "drseg" and cfg.pdgr and cfg.spsd:
        rho = (params.get("spsd") or {}).get("rho")
        if rho is not None:
            cfg = make_config(preset, {**block, "rho": float(rho)})
    return cfg


def train_block(params: dict, variant: str) -> tuple[dict, dict]:
    """``(loop params, data params)`` of the ``train`` block with the variant's overrides."""
    block = dict(section(params, "train"))
    block.update(variant_overrides(params, variant)[1])
    data = {k: block.pop(k) for k in DATA_KEYS if k in block}
    return block, data


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find_unfinished_run(variant: str, fingerprint: str) -> str | None:
    """The MLflow run of an interrupted training with the same params, to resume into."""
    from drseg import tracking

    mlflow = tracking.configured_mlflow()
    runs = mlflow.search_runs(
        filter_string=(f"tags.stage = 'train' and tags.variant = '{variant}' "
                       f"and tags.fingerprint = '{fingerprint}'"),
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if runs and runs[0].info.status != "FINISHED":
        return runs[0].info.run_id
    return None


def run(args: argparse.Namespace, params: dict) -> dict[str, Any]:
    """Train in this process (one rank of a distributed run, or alone)."""
    import torch

    from drseg import tracking
    from drseg.data.archive import load_suite, resolve_root
    from drseg.data.dataset import open_split
    from drseg.engine.distributed import cleanup, init_distributed
    from drseg.engine.train import (TrainConfig, code_record, config_fingerprint, train,
                                    write_loss_curve)
    from drseg.models.drseg import build_model

    loop, data = train_block(params, args.variant)
    model_cfg = resolve_model_config(params, args.variant, args.clip_checkpoint)
    if loop.get("crop") is None:
        loop["crop"] = model_cfg.image_size
    cfg = TrainConfig.from_params(loop)
    info = init_distributed(cfg.device)
    try:
        root = resolve_root(args.data)
        dataset_name = data.get("dataset") or (load_suite(args.data).get("sources") or [None])[0]
        if not dataset_name:
            raise DrsegInputError(f"{args.data}: suite lists no source dataset; set train.dataset")
        split = data.get("split", "train")
        clv = data.get("class_list_variant", "rskt-v1")
        dataset = open_split(root, dataset_name, split, clv)
        vocab = dataset.classes
        index = None
        if args.spsd_index:
            if not Path(args.spsd_index).is_file():
                raise DrsegInputError(f"{args.spsd_index}: SPSD channel index not found")
            index = json.loads(Path(args.spsd_index).read_text())
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg, channel_index=index)
        used_index = getattr(model, "channel_index", None)
        model.to(info.device)
        # the params and the code: the MLflow run of an interrupted training is continued only
        # for the same params and code (train() itself also refuses a last.pt of other code)
        fp = config_fingerprint(loop, model_cfg.to_dict(), {"dataset": dataset_name, "split": split,
                                                            "class_list_variant": clv},
                                used_index or {}, info.world_size,
                                code_record())
        logged = {"train": {**loop, **data, "dataset": dataset_name, "split": split,
                            "class_list_variant": clv, "world_size": info.world_size},
                  "model": model_cfg.to_dict(),
                  "spsd_index": {"path": str(args.spsd_index) if used_index else "none",
                                 "sha256": file_sha256(args.spsd_index) if used_index else "none"}}
        out = Path(args.out)
        reports = Path(args.reports)
        result = None
        if info.is_main:
            resume_id = _find_unfinished_run(args.variant, fp) if (out / "last.pt").exists() else None
            ctx = tracking.start_run("train", args.variant, params=None if resume_id else logged,
                                     tags={"fingerprint": fp, "train_dataset": dataset_name},
                                     run_id=resume_id)
        else:
            import contextlib
            ctx = contextlib.nullcontext()
        with ctx:
            on_log = None
            if info.is_main:
                on_log = lambda m, it: tracking.log_metrics(m, step=it, prefix="train")  # noqa: E731
            result = train(model, dataset, vocab, cfg, out, model_cfg=model_cfg.to_dict(),
                           train_dataset=dataset_name, channel_index=used_index, fingerprint=fp,
                           dist_info=info, on_log=on_log,
                           progress=not os.environ.get("TQDM_DISABLE"))
            if info.is_main:
                import mlflow

                write_loss_curve(result.losses, reports / "loss.csv")
                summary = {"variant": args.variant, "train_dataset": dataset_name, "split": split,
                           "iterations": result.iterations, "final_loss": result.final_loss,
                           "world_size": info.world_size}
                (reports / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
                sha = file_sha256(result.model_path)
                mlflow.set_tags({"checkpoint": str(result.model_path), "checkpoint_sha256": sha})
                mlflow.log_metrics({"train.final_loss": result.final_loss,
                                    "train.wall_s": result.wall_s,
                                    "train.it_per_s": (result.iterations - result.resumed_from)
                                    / max(result.wall_s, 1e-9)})
                if not data.get("keep_state", False):
                    (out / "last.pt").unlink(missing_ok=True)
                log.info("trained %s: %d iterations, final loss %.4f, %.1f s -> %s", args.variant,
                         result.iterations, result.final_loss, result.wall_s, result.model_path)
        return {"final_loss": result.final_loss if result else None}
    finally:
        cleanup()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="full", help="variant name (variants.<name> overrides)")
    ap.add_argument("--data", required=True, help="prepared suite folder (holds suite.json)")
    ap.add_argument("--spsd-index", default=None, help="SPSD channel_index.json")
    ap.add_argument("--clip-checkpoint", default=None, help="CLIP checkpoint (overrides model.clip_checkpoint)")
    ap.add_argument("--out", required=True, help="run folder: model_final.pt, last.pt")
    ap.add_argument("--reports", required=True, help="folder for loss.csv and train.json")
    ap.add_argument("--params", default="params.yaml")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from drseg.engine.distributed import launch, under_launcher

    args = parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    nproc = int(train_block(params, args.variant)[0].get("nproc", 1))
    if nproc > 1 and not under_launcher():
        return launch(nproc, sys.argv[1:] if argv is None else list(argv), __file__)
    run(args, params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
