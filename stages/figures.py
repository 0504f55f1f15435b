"""DVC stage `figures`: the paper's model figures from trained checkpoints.

    python stages/figures.py --data data/synth --runs 'data/runs/{variant}/model_final.pt' \
        --out reports/figures/model

- Fig. 5-style qualitative comparison: image, ground truth and the prediction of each method
  of ``report.figures.methods`` (CAT-Seg-style baseline, holistic-fusion baseline, DR-Seg) on
  the samples ``report.figures.samples`` of ``report.figures.dataset``.
- Fig. 7-style class-wise correlation maps of ``report.figures.correlation_variant``: the
  original CLIP branch C_ori (Eq. 10, mean over the rotations) above the refined branch C_ref
  (Eq. 11), read at the input of the model's fusion module (a forward pre-hook).

The arrays behind both figures go to ``<out>/arrays.npz``; the plots are drawn by
``drseg.reports.figures`` from those arrays, so this is the only place a model is loaded.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_params, section, setup_logging  # noqa: E402

import numpy as np  # noqa: E402

from drseg.errors import DrsegInputError  # noqa: E402

log = logging.getLogger("drseg.figures")

DEFAULTS: dict[str, Any] = {
    "dataset": None,          # null = the first target dataset of the suite
    "samples": [0, 1, 2],     # indices into the dataset's "all" split
    "class_list_variant": "rskt-v1",
    "methods": {"catseg": "CAT-Seg-style", "holistic-dinov3": "Holistic fusion", "full": "DR-Seg"},
    "correlation_variant": "full",
    "correlation_sample": 0,  # which of `samples` Fig. 7 shows
}


def load_model(path: str | Path):
    """A trained model from a ``drseg-model/1`` checkpoint (every weight is in the file)."""
    from drseg.engine.checkpoint import load_model_checkpoint, load_state_dict_checked
    from drseg.models.drseg import ModelConfig, build_model

    ckpt = load_model_checkpoint(path)
    cfg = dict(ckpt["model_cfg"])
    for k in ("clip_checkpoint", "prior_checkpoint"):  # rebuilt from the state dict alone
        cfg[k] = None
    model = build_model(ModelConfig.from_dict(cfg), channel_index=ckpt["channel_index"])
    load_state_dict_checked(model, ckpt["state_dict"], path)
    return model.eval()


def predict_labels(model, image, vocab: list[str]) -> np.ndarray:
    """``(H, W)`` class ids: the whole image squashed to the model input (as "noslide"),
    logits upsampled back to the image size, argmax."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        x = image.unsqueeze(0).float()  # (1, 3, H, W)
        logits = model(x, vocab)  # (1, K, h', w')
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1)[0].numpy().astype(np.int64)  # (H, W)


def correlation_maps(model, image, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(C_ori, C_ref)``, each ``(K, h, w)``, captured at the fusion module's input.

    Raises:
        DrsegInputError: the model has no refined branch (PDGR off, catseg, holistic, or the
            "separate" fusion that bypasses the fusion module's forward).
    """
    import torch

    fusion = getattr(model, "fusion", None)
    if fusion is None or getattr(model, "pdgr", None) is None:
        raise DrsegInputError("report.figures.correlation_variant: the model has no refined "
                              "branch (needs PDGR and a fusion module)")
    seen: dict[str, torch.Tensor] = {}

    def hook(_module, args):
        seen["ori"], seen["ref"] = args[0].detach(), args[1].detach()

    handle = fusion.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(image.unsqueeze(0).float(), vocab)
    finally:
        handle.remove()
    if "ori" not in seen:
        raise DrsegInputError("report.figures.correlation_variant: the fusion module was not "
                              "called (fusion 'separate'?); pick a variant with UGAF/mean/concat")
    ori = seen["ori"][0].float()  # (R, K, h, w): one correlation per rotation, Eq. 10
    ori = ori.mean(0) if ori.dim() == 4 else ori  # (K, h, w), rotations aggregated
    return ori.numpy(), seen["ref"][0].float().numpy()  # (K, h, w) each


def make_figures(*, data: str | Path, runs: str, out: str | Path, opts: dict) -> list[Path]:
    """Run the checkpoints on the chosen samples, save the arrays and draw Figs. 5 and 7.

    Args:
        data: the prepared suite folder (``suite.json``).
        runs: checkpoint path pattern with ``{variant}``.
        out: output folder.
        opts: the ``report.figures`` params (see DEFAULTS).
    """
    import torch

    from drseg.data.archive import load_suite, resolve_root
    from drseg.data.dataset import open_split
    from drseg.reports import figures as F

    torch.manual_seed(0)
    suite = load_suite(data)
    sources = set(suite.get("sources") or [])
    dataset = opts["dataset"] or next((d for d in suite["datasets"] if d not in sources), None)
    if dataset is None:
        raise DrsegInputError("report.figures.dataset: the suite has no target dataset")
    ds = open_split(resolve_root(data), dataset, "all", opts["class_list_variant"])
    vocab = list(ds.classes)
    idx = [int(i) for i in opts["samples"]]
    bad = [i for i in idx if not 0 <= i < len(ds)]
    if bad or not idx:
        raise DrsegInputError(f"report.figures.samples: {bad or idx} not in 0..{len(ds) - 1} "
                              f"of {dataset}")
    items = [ds[i] for i in idx]
    methods: dict[str, str] = dict(opts["methods"])
    preds: dict[str, list[np.ndarray]] = {}
    corr = None
    cv = opts["correlation_variant"]
    for variant in dict.fromkeys([*methods, cv]):
        path = Path(runs.format(variant=variant))
        log.info("%s: %s", variant, path)
        model = load_model(path)
        if variant in methods:
            preds[variant] = [predict_labels(model, it["image"], vocab) for it in items]
        if variant == cv:
            k = int(opts["correlation_sample"])
            if not 0 <= k < len(items):
                raise DrsegInputError(f"report.figures.correlation_sample: {k} not in 0..{len(items) - 1}")
            corr = correlation_maps(model, items[k]["image"], vocab)
        del model
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = np.stack([it["image"].numpy().transpose(1, 2, 0) for it in items])  # (S, H, W, 3)
    gts = np.stack([it["mask"].numpy() for it in items])  # (S, H, W)
    arrays = {"images": images.astype(np.float32), "gt": gts.astype(np.int64),
              "sample_index": np.array(idx), "classes": np.array(vocab)}
    arrays.update({f"pred_{v}": np.stack(p) for v, p in preds.items()})
    arrays.update({"corr_original": corr[0], "corr_refined": corr[1]})
    np.savez_compressed(out / "arrays.npz", **arrays)
    tag = "synthetic benchmark" if str(suite.get("suite")) == "synth" else str(suite.get("suite"))
    samples = [{"name": f"{dataset}[{i}]", "image": images[s], "gt": gts[s],
                "preds": {methods[v]: preds[v][s] for v in methods}} for s, i in enumerate(idx)]
    written = list(F.plot_qualitative(samples, vocab, out / "fig5_qualitative",
                                      columns=list(methods.values()),
                                      title=f"Qualitative comparison on {dataset} ({tag})"))
    (out / "fig5_qualitative.txt").write_text(
        f"Fig. 5-style comparison on {dataset} ({tag}; class lists {opts['class_list_variant']}): "
        f"image, ground truth, {', '.join(methods.values())} (variants {', '.join(methods)}). "
        f"Whole image squashed to the model input, as in noslide evaluation.\n")
    written += F.plot_correlation_maps(images[int(opts["correlation_sample"])], corr[0], corr[1],
                                       vocab, out / "fig7_correlation",
                                       title=f"Class-wise correlation maps of '{cv}' ({tag})")
    (out / "fig7_correlation.txt").write_text(
        f"Fig. 7-style class-wise correlation maps of variant '{cv}' on {dataset}[{idx[int(opts['correlation_sample'])]}]"
        f" ({tag}): original CLIP branch C_ori (Eq. 10, mean over rotations) above the refined "
        f"branch C_ref (Eq. 11); each map min-max normalised on its own.\n")
    written += [out / "arrays.npz", out / "fig5_qualitative.txt", out / "fig7_correlation.txt"]
    return written


def figure_options(params: dict) -> dict:
    """``report.figures`` over DEFAULTS, with unknown keys refused."""
    block = section(params, "report").get("figures") or {}
    unknown = sorted(set(block) - set(DEFAULTS))
    if unknown:
        raise DrsegInputError(f"params.yaml: unknown key(s) report.figures.{', '.join(unknown)}")
    return {**DEFAULTS, **block}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared suite folder (suite.json)")
    ap.add_argument("--runs", required=True, help="checkpoint path pattern with {variant}")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--params", default="params.yaml")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    written = make_figures(data=args.data, runs=args.runs, out=args.out,
                           opts=figure_options(load_params(args.params, check_inputs=False)))
    log.info("wrote %d files to %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
