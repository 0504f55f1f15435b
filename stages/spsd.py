"""DVC stage ``spsd``: frozen-CLIP prototypes, SPSD channel scores and the channel index file.

    python stages/spsd.py <archive root> <clip checkpoint> <out dir> <summary json>

DR-Seg section 3.2: class prototypes from the training split (Eq. 1-4 scores, Eq. 5 split).
Writes ``<out dir>/prototypes.pt``, ``<out dir>/scores.json``, ``<out dir>/channel_index.json``
(DESIGN.md "Shared formats"; training re-splits it at its own rho) and a small metrics file.
Params: the ``spsd:`` block (``spsd.study`` is read by the ``spsd_study`` stage).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clip_checkpoint, load_params, section, setup_logging  # noqa: E402  (puts the root on sys.path)

log = logging.getLogger("drseg.spsd")


def run(root: Path, clip_checkpoint: Path, out_dir: Path, summary_path: Path,
        spsd_block: dict, model_block: dict | None = None, progress: bool = True) -> dict:
    """Extract prototypes, score channels, write the outputs; returns the summary metrics."""
    import torch

    from drseg.data.dataset import open_split
    from drseg.engine import spsd as espsd
    from drseg.models import clip as dclip
    from drseg.models import spsd as mspsd

    cfg = espsd.SpsdConfig.from_params(spsd_block).resolve_backbone(model_block)
    torch.use_deterministic_algorithms(True, warn_only=True)
    root, cfg.dataset = espsd.resolve_source(root, cfg.dataset)
    dataset = open_split(root, cfg.dataset, cfg.split, cfg.class_list_variant)
    model, _ = dclip.load_open_clip(cfg.clip_model, clip_checkpoint, image_size=cfg.input_size,
                                    seed=cfg.seed)
    sha = espsd.file_sha256(clip_checkpoint)
    log.info("prototypes: %s/%s (%d images, %d classes), %s", cfg.dataset, cfg.split,
             len(dataset), dataset.num_classes, cfg.clip_model)
    ps = espsd.extract_prototypes(model, dataset, dataset.num_classes, cfg.num_prototypes,
                                  cfg.seed, input_size=cfg.input_size, view=cfg.view,
                                  purity=cfg.purity,
                                  batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                  device=cfg.torch_device(), progress=progress)
    names = dataset.classes
    if ps.absent:
        log.warning("classes with no labelled feature cell in %s/%s (left out): %s",
                    cfg.dataset, cfg.split, [names[k] for k in ps.absent])
    if ps.filled:
        log.warning("classes with fewer than %d cells (filled by drawing with replacement): %s",
                    cfg.num_prototypes, [names[k] for k in ps.filled])
    scores = mspsd.channel_scores(ps.prototypes, cfg.lam, cfg.eps)  # Eq. 1-4
    meta = {"backbone": cfg.clip_model, "clip_checkpoint_sha256": sha, "dataset": cfg.dataset,
            "split": cfg.split, "class_list_variant": cfg.class_list_variant,
            "input_size": cfg.input_size, "view": cfg.view, "purity": cfg.purity,
            "seed": cfg.seed}
    out_dir.mkdir(parents=True, exist_ok=True)
    espsd.save_prototypes(out_dir / "prototypes.pt", ps,
                          {**meta, "class_names": [names[k] for k in ps.class_ids]})
    rank_h = mspsd.normalized_rank(scores.H)
    rank_s = mspsd.normalized_rank(scores.S)
    mspsd.write_json_atomic(out_dir / "scores.json", {
        "format": "drseg-spsd-scores/1", **meta, "lambda": cfg.lam, "eps": cfg.eps,
        "num_prototypes": cfg.num_prototypes, "grid": list(ps.grid), "images": ps.images,
        "classes": [names[k] for k in ps.class_ids],
        "absent_classes": [names[k] for k in ps.absent],
        "filled_classes": [names[k] for k in ps.filled],
        "patches_per_class": dict(zip(names, ps.patches)),
        "pixels_per_class": dict(zip(names, ps.pixels)),
        "channels": [{"channel": c, "H": float(scores.H[c]), "S": float(scores.S[c]),
                      "rank_H": float(rank_h[c]), "rank_S": float(rank_s[c]),
                      "score": float(scores.score[c])} for c in range(scores.score.numel())],
    })
    index = mspsd.save_channel_index(out_dir / "channel_index.json", scores.score, rho=cfg.rho,
                                     lam=cfg.lam, backbone=cfg.clip_model,
                                     clip_checkpoint_sha256=sha, dataset=cfg.dataset)
    summary = {
        "channels": index["channels"], "classes_used": len(ps.class_ids),
        "classes_absent": len(ps.absent), "classes_filled": len(ps.filled),
        "images": ps.images, "labelled_cells": int(sum(ps.patches)),
        "H_mean": float(scores.H.mean()), "H_min": float(scores.H.min()),
        "H_max": float(scores.H.max()), "S_mean": float(scores.S.mean()),
        "S_min": float(scores.S.min()), "S_max": float(scores.S.max()),
        "rank_corr_H_S": espsd.spearman(scores.H, scores.S)[0],
        "reference_rho": cfg.rho, "semantic_channels": len(index["semantic"]),
    }
    mspsd.write_json_atomic(summary_path, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="dataset archive root (data/synth)")
    ap.add_argument("clip_checkpoint", type=Path,
                    help="frozen CLIP weights (model.clip_checkpoint wins when set)")
    ap.add_argument("out_dir", type=Path, help="output folder (data/spsd)")
    ap.add_argument("summary", type=Path, help="metrics json (reports/spsd/summary.json)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params()
    block = section(params, "spsd")
    model_block = params.get("model") or {}
    from drseg import tracking

    with tracking.start_run("spsd", params={"spsd": {k: v for k, v in block.items()
                                                     if k != "study"},
                                            "model.preset": model_block.get("preset")}):
        ckpt = Path(clip_checkpoint(params, args.clip_checkpoint))
        summary = run(args.root, ckpt, args.out_dir, args.summary, block, model_block)
        tracking.log_metrics(summary, prefix="spsd")
        import mlflow

        mlflow.log_artifact(str(args.out_dir / "channel_index.json"))
        mlflow.log_artifact(str(args.out_dir / "scores.json"))
    log.info("spsd: %s", summary)


if __name__ == "__main__":
    main()
