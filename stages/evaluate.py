"""DVC stage `evaluate`: a trained variant on every dataset of the suite, in one process.

    python stages/evaluate.py --variant full --data data/synth \
        --checkpoint data/runs/full/model_final.pt --out reports/metrics/full

Params: ``evaluate`` (mode noslide | slide, sizes, batch, device; docs/engine.md) and, to check
the checkpoint against, ``model`` + ``variants.<variant>``. Every dataset listed in the suite's
``suite.json`` is scored on its "all" set; the source dataset(s) also on ``source_split``
(val), kept out of the suite means. ``evaluate.nproc > 1`` re-launches under
``torch.distributed.run``; confusion matrices are summed over processes.

Writes ``<out>/<dataset>.json``, ``<out>/<source>_val.json`` and ``<out>/summary.json``
(DESIGN.md schemas) and logs the summary into the variant's training run in MLflow (found by
the checkpoint's sha256), or into a new ``evaluate@<variant>`` run when there is none.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (numerics unchanged): on a busy 2-core machine
# spinning threads starve each other (see stages/pretrain.py). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_params, section, setup_logging  # noqa: E402  (puts the root on sys.path)


log = logging.getLogger("drseg.evaluate")

#: keys of the ``evaluate`` block that choose the data, not the evaluation loop
DATA_KEYS = ("suite_datasets", "class_list_variant", "source_split", "nproc")
#: ModelConfig fields that are file locations, not architecture (not compared)
PATH_FIELDS = ("clip_checkpoint", "prior_checkpoint")


def _training_run(sha: str) -> str | None:
    from drseg import tracking

    mlflow = tracking.configured_mlflow()
    runs = mlflow.search_runs(filter_string=f"tags.checkpoint_sha256 = '{sha}'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0].info.run_id if runs else None


def run(args: argparse.Namespace, params: dict) -> dict:
    import torch

    from drseg import tracking
    from drseg.data.archive import load_suite, resolve_root
    from drseg.data.dataset import open_split
    from drseg.engine.checkpoint import load_model_checkpoint, load_state_dict_checked
    from drseg.engine.distributed import cleanup, init_distributed
    from drseg.engine.evaluate import EvalConfig, EvalItem, evaluate_suite
    from drseg.models.drseg import ModelConfig, build_model
    from stages.train import file_sha256, resolve_model_config

    block = dict(section(params, "evaluate"))
    data = {k: block.pop(k) for k in DATA_KEYS if k in block}
    expected = resolve_model_config(params, args.variant).to_dict()
    ckpt = load_model_checkpoint(args.checkpoint, {k: v for k, v in expected.items() if k not in PATH_FIELDS})
    saved_cfg = dict(ckpt["model_cfg"])
    if block.get("input_size") is None:
        block["input_size"] = int(saved_cfg["image_size"])
    cfg = EvalConfig.from_params(block)
    info = init_distributed(cfg.device)
    try:
        # rebuild without reading any weight file: the checkpoint holds every weight
        build_cfg = ModelConfig.from_dict({**saved_cfg, **{k: None for k in PATH_FIELDS}})
        model = build_model(build_cfg, channel_index=ckpt["channel_index"])
        load_state_dict_checked(model, ckpt["state_dict"], args.checkpoint)
        model.to(info.device).eval()
        if info.device.type == "cuda" and cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.compile and info.device.type == "cuda":
            model.compile_dense()  # not the text path: no recompile per dataset vocabulary

        suite = load_suite(args.data)
        root = resolve_root(args.data)
        names = data.get("suite_datasets") or suite["datasets"]
        sources = set(suite.get("sources") or [])
        clv = data.get("class_list_variant", "rskt-v1")
        source_split = data.get("source_split", "val")
        items = []
        for name in names:
            ds = open_split(root, name, "all", clv)
            items.append(EvalItem(name, ds, ds.classes, name, "all", clv))
        train_ds = ckpt["train_dataset"]
        for name in names:
            if name in sources and name == train_ds and source_split:
                ds = open_split(root, name, source_split, clv)
                items.append(EvalItem(f"{name}_{source_split}", ds, ds.classes, name, source_split, clv,
                                      in_suite_mean=False))
        summary = evaluate_suite(model, items, cfg, args.out, variant=args.variant, dist_info=info,
                                 progress=not os.environ.get("TQDM_DISABLE"),
                                 extra={"train_dataset": train_ds})
        speed = summary.pop("_speed")
        if info.is_main:
            sha = file_sha256(args.checkpoint)
            run_id = _training_run(sha)
            tags = {"mode": cfg.mode, "class_list_variant": clv, "train_dataset": train_ds}
            import mlflow

            if run_id:  # reopen the training run as it is (its stage/variant tags unchanged)
                ctx = tracking.configured_mlflow().start_run(run_id=run_id)
            else:
                ctx = tracking.start_run("evaluate", args.variant, params={"evaluate": {**block, **data}},
                                         tags={"checkpoint_sha256": sha})
            with ctx as r:
                mlflow.set_tags(tags)
                tracking.log_metrics({k: v for k, v in summary.items() if k != "variant"})
                tracking.log_metrics({n: {"images_per_s": s["images_per_s"]} for n, s in speed.items()},
                                     prefix="eval_speed")
                log.info("logged to MLflow run %s (%s)", r.info.run_id,
                         "training run" if run_id else "new evaluate run")
            log.info("%s (%s): m-mIoU %.2f  m-mACC %.2f  m-fwIoU %.2f", args.variant, cfg.mode,
                     summary["m-mIoU"], summary["m-mACC"], summary["m-fwIoU"])
        return summary
    finally:
        cleanup()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="full")
    ap.add_argument("--data", required=True, help="prepared suite folder (holds suite.json)")
    ap.add_argument("--checkpoint", required=True, help="model_final.pt of the variant")
    ap.add_argument("--out", required=True, help="metrics folder of the variant")
    ap.add_argument("--params", default="params.yaml")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from drseg.engine.distributed import launch, under_launcher

    args = parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    nproc = int(section(params, "evaluate").get("nproc", 1))
    if nproc > 1 and not under_launcher():
        return launch(nproc, sys.argv[1:] if argv is None else list(argv), __file__)
    run(args, params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
