"""DVC stages ``pretrain`` and ``pretrain_zeroshot``: the embedded tiny CLIP (issue 9).

    python stages/pretrain.py train <checkpoint .pt> <metrics dir> <figure .png>
    python stages/pretrain.py zeroshot <suite dir> <checkpoint .pt> <metrics dir> <figure .png>

``train`` builds the caption corpus (:mod:`drseg.data.captions`), pretrains the open_clip model
contrastively on the CPU (:func:`drseg.engine.pretrain.train_clip`), saves an ordinary open_clip
state dict, and writes the evidence that needs no benchmark: held-out retrieval recall@1/5,
zero-shot presence AUC per concept, synonym structure of the text space
(``<metrics dir>/metrics.json``), the loss curve (``<metrics dir>/loss.json``) and a figure of
images with their top retrieved captions.

``zeroshot`` measures the zero-shot dense segmentation mIoU of the frozen checkpoint on the
source val split of the prepared suite (``<metrics dir>/zeroshot.json``) and draws a few
predictions. It is its own stage so that a change of the benchmark (``prepare``) does not
retrain CLIP. Params: the ``pretrain:`` block.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. Numerics are unchanged; on a busy 2-core machine
# spinning threads of a 2-thread pool starve each other (measured: 2.6-12 s a step instead of
# 1.4 s with other jobs running). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_params, section, setup_logging  # noqa: E402  (puts the root on sys.path)
from drseg.atomic import atomic_write_text  # noqa: E402  (no torch import)

log = logging.getLogger("drseg.pretrain")


def _round(x, nd: int = 4):
    """Round floats in nested dicts / lists (NaN -> None) so metrics files read cleanly."""
    if isinstance(x, float):
        return None if x != x else round(x, nd)
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, nd) for v in x]
    return x


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(_round(obj), indent=1, sort_keys=False) + "\n")


def run_train(checkpoint: Path, metrics_dir: Path, figure: Path, block: dict,
              progress: bool = True, on_log=None) -> dict:
    """Corpus -> training -> checkpoint -> corpus-side evidence; returns the metrics dict.

    Args:
        checkpoint: the .pt to write.
        metrics_dir: folder of ``metrics.json`` and ``loss.json``.
        figure: the retrieval figure (.png; a .pdf is written beside it).
        block: the ``pretrain:`` params block.
        progress: progress bars.
        on_log: ``(step, record)`` callback during training (MLflow).
    """
    import numpy as np
    import torch

    from drseg.data import captions
    from drseg.engine import pretrain as P

    cfg = P.PretrainConfig.from_params(block)
    P.set_determinism(cfg.seed, cfg.threads)
    timings = {}
    t0 = time.perf_counter()
    corpus = captions.make_corpus(cfg.corpus_size, cfg.corpus_seed, image_size=_image_size(cfg),
                                  progress=progress, **cfg.corpus_kwargs())
    heldout = captions.make_corpus(cfg.heldout_size, cfg.heldout_seed, image_size=_image_size(cfg),
                                   progress=progress, **cfg.corpus_kwargs())
    timings["corpus_s"] = time.perf_counter() - t0
    log.info("corpus: %d captioned images (%d crops, %d distinct contents), held out %d",
             len(corpus), int(corpus.is_crop.sum()), len(set(corpus.groups().tolist())),
             len(heldout))
    t1 = time.perf_counter()
    model, tokenizer, history = P.train_clip(
        corpus, model_name=cfg.model_name, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, warmup=cfg.warmup, seed=cfg.seed, threads=cfg.threads,
        multi_positive=cfg.multi_positive, augment_views=cfg.augment, log_every=cfg.log_every,
        on_log=on_log, progress=progress, pool_type=cfg.pool_type)
    timings["train_s"] = time.perf_counter() - t1
    P.save_clip_checkpoint(model, checkpoint)

    t2 = time.perf_counter()
    # the evidence is computed with the checkpoint as every later stage loads it
    loaded, _ = P.load_pretrained(checkpoint, cfg.model_name, cfg.pool_type)
    names = captions.concept_names(corpus.concepts)
    img = P.encode_images(loaded, heldout.images)
    txt = P.encode_texts(loaded, tokenizer, heldout.captions)
    groups = torch.from_numpy(heldout.groups())
    retrieval = P.retrieval_recall(img, txt, groups)
    name_emb, name_group = P.concept_text_embeddings(loaded, tokenizer, names)
    presence = P.presence_auc(img, name_emb, name_group, heldout.named, heldout.fractions,
                              corpus.concepts)
    synonyms = P.synonym_similarity(loaded, tokenizer, names)
    timings["eval_s"] = time.perf_counter() - t2

    # figure: held-out images spread over the set (several scenes), retrieving among all
    # held-out captions
    n = min(cfg.figure_samples, len(heldout))
    pick = np.linspace(0, len(heldout) - 1, n).round().astype(int)
    idx, cos = P.top_captions(img[pick], txt, k=3)
    retrieved = [[(heldout.captions[j], float(c), P.caption_match(heldout.named[i], heldout.named[j]))
                  for j, c in zip(idx[r], cos[r])] for r, i in enumerate(pick)]
    P.retrieval_figure(heldout.images[pick], [heldout.captions[i] for i in pick], retrieved, figure)

    metrics = {
        "model_name": cfg.model_name,
        "pool_type": cfg.pool_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus": {"size": len(corpus), "crops": int(corpus.is_crop.sum()),
                   "distinct_contents": len(set(corpus.groups().tolist())),
                   "heldout": len(heldout)},
        "steps": cfg.steps,
        "final_loss": history[-1]["loss"],
        "final_logit_scale": history[-1]["logit_scale"],
        "retrieval": retrieval,
        "presence": presence,
        "synonyms": synonyms,
        "checkpoint_sha256": _sha256(checkpoint),
    }
    metrics_dir.mkdir(parents=True, exist_ok=True)
    _write_json(metrics_dir / "metrics.json", metrics)
    _write_json(metrics_dir / "loss.json", history)
    metrics["timings"] = timings  # wall times: logged, not written (outputs stay byte-identical)
    return metrics


def _image_size(cfg) -> int:
    """The input size of the open_clip config (the corpus renders at it)."""
    from drseg.models import clip as dclip
    import open_clip

    dclip.register_configs()
    mc = open_clip.get_model_config(cfg.model_name)
    if mc is None:
        from drseg.errors import DrsegInputError
        raise DrsegInputError(f"pretrain.model_name: unknown open_clip config {cfg.model_name!r}")
    size = mc["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_zeroshot(suite_dir: Path, checkpoint: Path, metrics_dir: Path, figure: Path, block: dict,
                 progress: bool = True) -> dict:
    """Zero-shot dense mIoU of the frozen checkpoint on the suite's source val split.

    Returns:
        the metrics dict written to ``<metrics_dir>/zeroshot.json``.
    """
    import numpy as np
    import torch

    from drseg.data.archive import load_suite, resolve_root
    from drseg.data.dataset import open_split
    from drseg.engine import pretrain as P

    cfg = P.PretrainConfig.from_params(block)
    P.set_determinism(cfg.seed, cfg.threads)
    zs = cfg.zeroshot
    dataset = zs["dataset"]
    if dataset is None:
        sources = load_suite(suite_dir).get("sources") or []
        if not sources:
            from drseg.errors import DrsegInputError
            raise DrsegInputError(f"{suite_dir}/suite.json lists no source dataset; set "
                                  f"pretrain.zeroshot.dataset")
        dataset = sources[0]
    ds = open_split(resolve_root(suite_dir), dataset, zs["split"], zs["class_list_variant"])
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])  # (N, 3, H, W) 0..255
    masks = torch.stack([it["mask"] for it in items])  # (N, H, W)
    model, tokenizer = P.load_pretrained(checkpoint, cfg.model_name, cfg.pool_type)
    per_size = {}
    for size in zs["input_sizes"]:
        r = P.dense_zero_shot(model, tokenizer, images, masks, ds.classes, input_size=int(size))
        per_size[str(size)] = {k: r[k] for k in ("mIoU", "mACC", "fwIoU", "pACC", "IoU")}
        const = r["constant_mIoU"]
    # reference: the same measurement with the untrained (seeded random) initialisation
    from drseg.models import clip as dclip

    init, _ = dclip.load_open_clip(cfg.model_name, checkpoint=None, seed=cfg.seed)
    random_init = P.dense_zero_shot(init, tokenizer, images, masks, ds.classes,
                                    input_size=int(zs["input_sizes"][0]))["mIoU"]
    head = per_size[str(zs["input_sizes"][0])]["mIoU"]
    out = {
        "dataset": dataset, "split": zs["split"], "class_list_variant": zs["class_list_variant"],
        "images": len(ds), "classes": ds.classes, "input_sizes": list(zs["input_sizes"]),
        "mIoU": head, "constant_mIoU": const, "ratio_to_constant": head / const,
        "random_init_mIoU": random_init,
        "per_input_size": per_size,
        "checkpoint_sha256": _sha256(checkpoint),
    }
    _write_json(metrics_dir / "zeroshot.json", out)
    n = min(cfg.figure_samples, len(ds))
    pred = P.dense_predict(model, tokenizer, images[:n], ds.classes,
                           input_size=int(zs["input_sizes"][-1]))
    from drseg.data.catalog import get_dataset
    from drseg.data.dataset import class_colors

    colors = class_colors(get_dataset(dataset), zs["class_list_variant"])
    P.zeroshot_figure(images[:n].permute(0, 2, 3, 1).numpy().astype(np.uint8), masks[:n].numpy(),
                      pred.numpy(), ds.classes, figure, class_colors=colors)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="corpus, contrastive pretraining, checkpoint, evidence")
    t.add_argument("checkpoint", type=Path)
    t.add_argument("metrics_dir", type=Path)
    t.add_argument("figure", type=Path)
    z = sub.add_parser("zeroshot", help="zero-shot dense mIoU on the source val split")
    z.add_argument("suite_dir", type=Path)
    z.add_argument("checkpoint", type=Path)
    z.add_argument("metrics_dir", type=Path)
    z.add_argument("figure", type=Path)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    block = dict(section(load_params(args.params), "pretrain"))

    from drseg import tracking

    if args.cmd == "train":
        with tracking.start_run("pretrain", params={"pretrain": block}):
            t0 = time.perf_counter()
            m = run_train(args.checkpoint, args.metrics_dir, args.figure, block,
                          on_log=lambda step, rec: tracking.log_metrics(
                              {"loss": rec["loss"], "logit_scale": rec["logit_scale"],
                               "lr": rec["lr"]}, step=step, prefix="pretrain"))
            m["timings"]["total_s"] = time.perf_counter() - t0
            tracking.log_metrics({k: v for k, v in m.items() if k != "presence"} |
                                 {"presence": {"mean_auc": m["presence"]["mean_auc"],
                                               **{f"auc_{c}": a for c, a in m["presence"]["auc"].items()}}},
                                 prefix="pretrain")
            import mlflow
            mlflow.log_artifact(str(args.metrics_dir / "metrics.json"))
            mlflow.log_artifact(str(args.figure))
        log.info("pretrain: %s; wall %.1f s (corpus %.1f, train %.1f, eval %.1f)", args.checkpoint,
                 m["timings"]["total_s"], m["timings"]["corpus_s"], m["timings"]["train_s"],
                 m["timings"]["eval_s"])
        log.info("retrieval %s; presence mean AUC %.1f; synonyms within %.3f across %.3f",
                 {k: round(v, 1) for k, v in m["retrieval"].items()}, m["presence"]["mean_auc"],
                 m["synonyms"]["within"], m["synonyms"]["across"])
    else:
        with tracking.start_run("pretrain", variant="zeroshot", params={"pretrain": block}):
            out = run_zeroshot(args.suite_dir, args.checkpoint, args.metrics_dir, args.figure, block)
            tracking.log_metrics({k: out[k] for k in ("mIoU", "constant_mIoU", "ratio_to_constant",
                                                      "random_init_mIoU")}
                                 | {"per_input_size": {s: {k: v for k, v in r.items() if k != "IoU"}
                                                       for s, r in out["per_input_size"].items()}},
                                 prefix="pretrain_zeroshot")
        log.info("zero-shot dense mIoU %.2f (best constant %.2f, ratio %.2f; random init %.2f) "
                 "on %s/%s", out["mIoU"], out["constant_mIoU"], out["ratio_to_constant"],
                 out["random_init_mIoU"], out["dataset"], out["split"])


if __name__ == "__main__":
    main()
