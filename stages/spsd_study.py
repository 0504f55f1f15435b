"""DVC stage ``spsd_study``: the zero-shot channel studies of SPSD with the frozen CLIP.

    python stages/spsd_study.py <archive root> <clip checkpoint> <spsd dir> <reports dir> \
        <maps json> <figures dir>

- paper Fig. 6 / section 4.3 "Verification of SPSD": zero-shot mIoU keeping only the top- or
  bottom-ranked channels (visual features and text embeddings sliced alike), 10% .. 100%;
- paper Fig. 2: the mIoU drop when one channel is masked, on a seeded sample of images;
- beyond the paper: Spearman correlation of the SPSD score (and of H, S) with that drop.

All on the source dataset's ``spsd.study.split`` (val), no training; the encoder runs once per
image. Writes ``<reports dir>/study.json`` (metrics), ``retention.json`` and ``masking.json``
(plots), the activation maps for Fig. 2 to ``<maps json>`` and the figures (PNG + PDF) to
``<figures dir>/spsd_fig2_masking``, ``spsd_fig6_retention``, ``spsd_score_vs_drop``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clip_checkpoint, load_params, section, setup_logging  # noqa: E402  (puts the root on sys.path)

log = logging.getLogger("drseg.spsd_study")

FIGURES = ("spsd_fig2_masking", "spsd_fig6_retention", "spsd_score_vs_drop")


def _thumb(image, mask, side: int = 64):
    """Downsample an image (3, H, W) and its mask (H, W) to at most ``side`` px (figure use)."""
    import torch.nn.functional as F

    H, W = mask.shape
    s = min(1.0, side / max(H, W))
    size = (max(1, round(H * s)), max(1, round(W * s)))
    img = F.interpolate(image[None].float(), size=size, mode="area")[0]  # (3, h, w)
    m = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img.round().clamp(0, 255).byte().permute(1, 2, 0).tolist(), m.tolist()


def _finite(obj):
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    import math

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run(root: Path, clip_checkpoint: Path, spsd_dir: Path, reports_dir: Path, maps_path: Path,
        figures_dir: Path, spsd_block: dict, model_block: dict | None = None,
        progress: bool = True) -> dict:
    """Run the studies and write every output; returns the metrics."""
    import torch
    from torch.utils.data import Subset

    from drseg.data.dataset import open_split
    from drseg.engine import spsd as espsd
    from drseg.models import clip as dclip
    from drseg.models import spsd as mspsd
    from drseg.reports import spsd_figures as figs

    cfg = espsd.SpsdConfig.from_params(spsd_block).resolve_backbone(model_block)
    st = espsd.StudyConfig.from_params(cfg.study)
    torch.use_deterministic_algorithms(True, warn_only=True)
    index_path = spsd_dir / "channel_index.json"
    sha = espsd.file_sha256(clip_checkpoint)
    model, tok = dclip.load_open_clip(cfg.clip_model, clip_checkpoint, image_size=cfg.input_size,
                                      seed=cfg.seed)
    C = int(model.visual.output_dim)
    index = mspsd.load_channel_index(index_path, channels=C, backbone=cfg.clip_model)
    if index["clip_checkpoint_sha256"] != sha:
        from drseg.errors import DrsegInputError

        raise DrsegInputError(f"{index_path}: computed with CLIP weights sha256 "
                              f"{index['clip_checkpoint_sha256'][:12]}.., but {clip_checkpoint} "
                              f"is {sha[:12]}..; rerun the spsd stage")
    score_rows = figs.read_json(spsd_dir / "scores.json")["channels"]
    root, cfg.dataset = espsd.resolve_source(root, cfg.dataset)
    dataset = open_split(root, cfg.dataset, st.split, cfg.class_list_variant)
    device = cfg.torch_device()

    # Fig. 6 on the whole split, Fig. 2 on a seeded sample: features computed once each
    full_set = espsd.compute_study_features(model, tok, dataset, dataset.classes,
                                            cfg.input_size, cfg.view, cfg.batch_size,
                                            cfg.num_workers, device, progress,
                                            desc="spsd features (split)")
    sample = espsd.sample_indices(len(dataset), st.masking_images, st.seed)
    if len(sample) == len(dataset):
        masked_set = full_set
    else:
        masked_set = espsd.compute_study_features(model, tok, Subset(dataset, sample),
                                                  dataset.classes, cfg.input_size, cfg.view,
                                                  cfg.batch_size, cfg.num_workers, device,
                                                  progress, desc="spsd features (sample)")
    full_set, masked_set = full_set.to(device), masked_set.to(device)  # studies run there too
    retention = espsd.retention_study(full_set, index["order"], st.ratios, st.random_draws,
                                      st.seed, progress)
    full_miou, drops = espsd.masking_study(masked_set, progress)

    score = torch.tensor(index["score"], dtype=torch.float64)
    H = torch.tensor([r["H"] for r in score_rows], dtype=torch.float64)
    S = torch.tensor([r["S"] for r in score_rows], dtype=torch.float64)
    rho_score, p_score = espsd.spearman(score, drops)
    rho_h, p_h = espsd.spearman(H, drops)
    rho_s, p_s = espsd.spearman(S, drops)
    semantic = set(index["semantic"])
    by_drop = sorted(range(C), key=lambda c: (-float(drops[c]), c))
    rank_of = {c: r for r, c in enumerate(by_drop)}
    masking_rows = [{"channel": c, "rank": rank_of[c], "drop": float(drops[c]),
                     "score": float(score[c]), "H": float(H[c]), "S": float(S[c]),
                     "semantic": c in semantic} for c in range(C)]

    # Fig. 2 bottom: maps with the top map_fraction positive / negative channels removed
    n_drop = max(1, int(st.map_fraction * C))
    examples = []
    for i, k in espsd.map_examples(masked_set, st.map_examples):
        maps = espsd.channel_mask_maps(masked_set, i, k, {
            "drop_negative": by_drop[::-1][:n_drop], "all": [],
            "drop_positive": by_drop[:n_drop]})
        item = dataset[sample[i]]
        image, mask = _thumb(item["image"], item["mask"])
        examples.append({"path": Path(masked_set.paths[i]).name, "class_id": k,
                         "class_name": dataset.classes[k], "image": image, "mask": mask, **maps})
    mspsd.write_json_atomic(maps_path, {"fraction": st.map_fraction, "channels_dropped": n_drop,
                                        "examples": examples})

    reports_dir.mkdir(parents=True, exist_ok=True)
    mspsd.write_json_atomic(reports_dir / "retention.json", _finite(retention))
    mspsd.write_json_atomic(reports_dir / "masking.json", _finite(masking_rows))
    gaps = [r["top"] - r["bottom"] for r in retention if r["ratio"] < 1]
    metrics = {
        "dataset": cfg.dataset, "split": st.split, "backbone": cfg.clip_model,
        "split_images": len(dataset), "masking_images": len(sample), "channels": C,
        "zero_shot_mIoU": espsd.zero_shot_miou(full_set),
        "masking_full_mIoU": full_miou,
        "retention": {f"{round(100 * r['ratio'])}": {k: r[k] for k in r if k not in
                                                      ("ratio", "channels")}
                      for r in retention},
        "top_minus_bottom_mean": sum(gaps) / len(gaps) if gaps else None,
        "positive_channels": int((drops > 0).sum()), "negative_channels": int((drops <= 0).sum()),
        "max_drop": float(drops.max()), "min_drop": float(drops.min()),
        "spearman_score_drop": rho_score, "spearman_score_drop_p": p_score,
        "spearman_H_drop": rho_h, "spearman_H_drop_p": p_h,
        "spearman_S_drop": rho_s, "spearman_S_drop_p": p_s,
        "semantic_mean_drop": float(drops[sorted(semantic)].mean()) if semantic else None,
        "structural_mean_drop": (float(drops[index["structural"]].mean())
                                 if index["structural"] else None),
        "reference_rho": index["rho"],
    }
    metrics = _finite(metrics)  # e.g. Spearman of a constant drop vector is NaN -> null
    mspsd.write_json_atomic(reports_dir / "study.json", metrics)

    tag = f"{cfg.clip_model}, {cfg.dataset} {st.split}, frozen CLIP {sha[:8]}"
    figs.plot_retention(retention, figures_dir / FIGURES[1],
                        title=f"top- / bottom-ranked SPSD channels\n({tag})")
    figs.plot_masking(masking_rows, figures_dir / FIGURES[0], full_miou,
                      maps=figs.read_json(maps_path))
    figs.plot_score_vs_drop(masking_rows, figures_dir / FIGURES[2], rho_score, p_score)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="dataset archive root (data/synth)")
    ap.add_argument("clip_checkpoint", type=Path,
                    help="frozen CLIP weights (model.clip_checkpoint wins when set)")
    ap.add_argument("spsd_dir", type=Path, help="output folder of the spsd stage (data/spsd)")
    ap.add_argument("reports_dir", type=Path, help="metrics / plots folder (reports/spsd)")
    ap.add_argument("maps", type=Path, help="activation maps json (data/spsd_study/...)")
    ap.add_argument("figures_dir", type=Path, help="figures folder (reports/figures)")
    args = ap.parse_args(argv)
    setup_logging()
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    params = load_params()
    block = section(params, "spsd")
    model_block = params.get("model") or {}
    from drseg import tracking

    with tracking.start_run("spsd_study", params={"spsd": block,
                                                  "model.preset": model_block.get("preset")}):
        ckpt = Path(clip_checkpoint(params, args.clip_checkpoint))
        metrics = run(args.root, ckpt, args.spsd_dir, args.reports_dir, args.maps,
                      args.figures_dir, block, model_block)
        tracking.log_metrics({k: v for k, v in metrics.items()}, prefix="spsd_study")
        import mlflow

        for name in FIGURES:
            mlflow.log_artifact(str(args.figures_dir / f"{name}.png"))
        for name in ("study.json", "retention.json", "masking.json"):
            mlflow.log_artifact(str(args.reports_dir / name))
    log.info("spsd_study: zero-shot mIoU %s, Spearman(score, drop) %s",
             metrics["zero_shot_mIoU"], metrics["spearman_score_drop"])


if __name__ == "__main__":
    main()
