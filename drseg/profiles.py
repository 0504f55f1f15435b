"""Named run profiles: the embedded default and the paper's settings.

"DR-Seg: Decouple and Rectify ..." (2026), section 4.1, and the RSKT-Seg benchmark protocol it
follows (``/work/shared/reference/PROTOCOL.md`` section 1). A profile is a set of values for
the blocks of ``params.yaml``; the param ``profile`` picks one:

* ``embedded`` (default): no values of its own; the synthetic suite, tiny models, CPU.
* ``paper-vitb16-dlrsd``, ``paper-vitb16-isaid``, ``paper-vitl14-dlrsd``,
  ``paper-vitl14-isaid``: the real archive (``prepare.suite: rskt``), CLIP ViT-B/16 at 384 or
  ViT-L/14 at 336 with OpenAI weights, RS-DINOv3 ViT-L/16 prior, trained on DLRSD or iSAID for
  30k iterations (batch 8, AdamW lr 2e-4, wd 1e-4, grad clip 0.01, CLIP lr x 0.01), lambda 0.3,
  rho 0.5, sigma_f 2.0, sigma_s 0.05, k 75, noslide evaluation (short side 640, long side
  <= 2560) on all eight datasets, on CUDA.

Precedence (:func:`apply_profile`), lowest first::

    params.yaml blocks  <  the profile's values  <  the ``overrides`` block

``dvc exp run -S train.iterations=...`` writes into params.yaml, where it cannot be told apart
from the embedded default, so under a paper profile a key the profile sets is changed through
``overrides`` (``-S '+overrides.train.iterations=1000'``). Keys no profile sets are the user's
and are read from their blocks as usual: ``prepare.archive_root``, ``weights.*``,
``train.nproc`` (the GPU count; ``evaluate.nproc`` follows it), seeds, ...

The ``weights`` block holds the user's local checkpoint files; the paper profiles route them
into ``model.clip_checkpoint``, ``model.prior_checkpoint`` and the DINOv1 variants of Table 3.
:func:`check_weights` fails before any work starts when a file is missing, naming the file and
the param to set. This module works on a params *dict*; ``stages/_common.py:load_params`` is
the only caller that reads ``params.yaml``.
"""
from __future__ import annotations

import argparse
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from drseg.errors import DrsegInputError

log = logging.getLogger("drseg.profiles")

DEFAULT_PROFILE = "embedded"

#: Keys of the ``weights`` block: the user's local checkpoint files.
WEIGHT_KEYS = ("clip_checkpoint", "prior_checkpoint", "prior_dinov1_checkpoint")

#: Top-level blocks the ``overrides`` block may change (each is a params.yaml block).
OVERRIDABLE = ("prepare", "pretrain", "spsd", "model", "train", "evaluate", "report", "variants")


@dataclass(frozen=True)
class Ref:
    """A profile value taken from another param of the resolved params.

    Args:
        path: dotted key, e.g. ``"weights.clip_checkpoint"`` or ``"train.nproc"``.
    """

    path: str


@dataclass(frozen=True)
class Replace:
    """A mapping value that replaces the params.yaml mapping instead of merging into it.

    Args:
        value: the new mapping (e.g. ``{}`` to drop the tiny preset's ``prior_kwargs``).
    """

    value: Any


@dataclass(frozen=True)
class Profile:
    """One named profile.

    Args:
        name: the value of the ``profile`` param.
        description: one line for ``python -m drseg profile --list`` and the docs.
        values: ``{block: {key: value}}`` set over params.yaml (:class:`Ref` and
            :class:`Replace` allowed).
        weights: ``{weights key: the file it must point to}``; these keys are required.
    """

    name: str
    description: str
    values: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- the paper

#: Paper section 4.1 / PROTOCOL.md section 1, one place for the numbers.
PAPER = {
    "iterations": 30000,  # "30K iterations"
    "batch_size": 8,  # global, over all GPUs
    "lr": 2e-4,  # AdamW, cosine to 0, no warm-up (PROTOCOL.md)
    "weight_decay": 1e-4,
    "clip_lr_mult": 0.01,  # CLIP q/v at 0.01 x lr (PROTOCOL.md)
    "grad_clip": 0.01,  # full-model gradient-norm clip (PROTOCOL.md)
    "lambda": 0.3,  # Eq. 4
    "rho": 0.5,  # Eq. 5
    "sigma_f": 2.0,  # Eq. 7
    "sigma_s": 0.05,  # Eq. 7
    "k": 75,  # top-k neighbours
    "template": "A photo of a {} in the scene",
    "prior": "vit_large_patch16_dinov3",  # RS-DINOv3 ViT-L/16 (timm tag sat493m)
    "prior_dinov1": "vit_base_patch8_224",  # Table 3: RSIB, DINO v1 ViT-B/8 (timm tag dino)
    "short_side": 640,  # noslide evaluation
    "max_long": 2560,
    "slide_size": 640,  # slide evaluation (CAT-Seg / OVRS), windows of the model input
    "slide_stride": 256,
    "ablation_datasets": ["Potsdam", "VDD", "UAVid", "UDD5"],  # section 4.3
    "table5_rho": {"rho03": 0.3, "rho04": 0.4, "rho06": 0.6, "rho07": 0.7},
    "table6_k": {"k20": 20, "k40": 40, "k50": 50, "k100": 100},
}

#: (model preset, input side, label, OpenAI CLIP file) per backbone.
BACKBONES = {
    "vitb16": ("vitb16-384", 384, "ViT-B/16", "OpenAI CLIP ViT-B/16 (ViT-B-16.pt)"),
    "vitl14": ("vitl14-336", 336, "ViT-L/14", "OpenAI CLIP ViT-L/14 at 336 px (ViT-L-14-336px.pt)"),
}
#: Source dataset (catalog name) per profile suffix.
SOURCES = {"dlrsd": "DLRSD", "isaid": "iSAID"}

#: Where each weights key comes from (docs/real.md).
WEIGHT_FILES = {
    "prior_checkpoint": "RS-DINOv3 ViT-L/16, Meta's DINOv3 satellite release "
                        "(dinov3_vitl16_pretrain_sat493m-*.pth)",
    "prior_dinov1_checkpoint": "RSIB DINO v1 ViT-B/8 of GSNet / RSKT-Seg (a .pth with a "
                               "'teacher' key)",
}


def _dinov1_variant() -> dict:
    """Model values of a Table 3 DINOv1 variant: RSIB at 384 px (48x48 -> 2x2 conv -> 24x24)."""
    return {"prior": PAPER["prior_dinov1"], "prior_checkpoint": Ref("weights.prior_dinov1_checkpoint"),
            "prior_kwargs": Replace({}), "prior_image_size": 384}


def paper_profile(backbone: str, source: str) -> Profile:
    """The paper's setting for one backbone and one training source.

    Args:
        backbone: ``"vitb16"`` or ``"vitl14"``.
        source: ``"dlrsd"`` or ``"isaid"``.

    Returns:
        the profile ``paper-<backbone>-<source>``.
    """
    preset, size, label, clip_file = BACKBONES[backbone]
    dataset = SOURCES[source]
    p = PAPER
    values = {
        "prepare": {"suite": "rskt"},
        "spsd": {"lambda": p["lambda"], "rho": p["rho"], "dataset": dataset, "split": "train",
                 "class_list_variant": "rskt-v1", "clip_model": None, "input_size": None,
                 "device": "cuda", "num_workers": 8},
        "model": {"preset": preset, "variant": "drseg", "rotations": True, "pdgr": True,
                  "spsd": True, "ugaf": True, "fusion": "ugaf", "rho": None, "k": p["k"],
                  "sigma_f": p["sigma_f"], "sigma_s": p["sigma_s"],
                  "templates": [p["template"]], "prior": p["prior"], "prior_kwargs": Replace({}),
                  "clip_checkpoint": Ref("weights.clip_checkpoint"),
                  "prior_checkpoint": Ref("weights.prior_checkpoint")},
        "train": {"dataset": dataset, "split": "train", "class_list_variant": "rskt-v1",
                  "device": "cuda", "iterations": p["iterations"], "batch_size": p["batch_size"],
                  "lr": p["lr"], "weight_decay": p["weight_decay"],
                  "clip_lr_mult": p["clip_lr_mult"], "grad_clip": p["grad_clip"], "crop": size,
                  "flip": True, "color_jitter": True, "checkpoint_every": 1000, "log_every": 50,
                  "num_workers": 8},
        "evaluate": {"mode": "noslide", "class_list_variant": "rskt-v1", "source_split": "val",
                     "input_size": size, "short_side": p["short_side"], "max_long": p["max_long"],
                     "slide_size": p["slide_size"], "slide_stride": p["slide_stride"],
                     "device": "cuda", "nproc": Ref("train.nproc"), "num_workers": 8},
        "report": {"provenance": "real", "ablation_datasets": list(p["ablation_datasets"])},
        "variants": {
            **{name: {"rho": rho} for name, rho in p["table5_rho"].items()},
            **{name: {"k": k} for name, k in p["table6_k"].items()},
            "holistic-dinov1": _dinov1_variant(),
            "prior-dinov1": _dinov1_variant(),
        },
    }
    name = f"paper-{backbone}-{source}"
    return Profile(
        name=name,
        description=(f"paper section 4.1: train on {dataset}, OpenAI CLIP {label} at {size} px, "
                     f"RS-DINOv3 ViT-L/16 prior, evaluate all 8 datasets on CUDA"),
        values=values,
        weights={"clip_checkpoint": clip_file, **WEIGHT_FILES})


#: The registry: ``profile`` param value -> :class:`Profile`.
PROFILES: dict[str, Profile] = {
    DEFAULT_PROFILE: Profile(DEFAULT_PROFILE, "embedded synthetic suite, tiny models, CPU "
                                              "(params.yaml as written)"),
    **{f"paper-{b}-{s}": paper_profile(b, s) for b in BACKBONES for s in SOURCES},
}


# --------------------------------------------------------------------------- resolution

def get_profile(name: Optional[str]) -> Profile:
    """The profile called ``name`` (``None`` = the embedded default).

    Raises:
        DrsegInputError: unknown name (the message lists the known ones).
    """
    name = DEFAULT_PROFILE if name is None else name
    if not isinstance(name, str) or name not in PROFILES:
        raise DrsegInputError(f"params.yaml: profile {name!r} is not one of {sorted(PROFILES)}")
    return PROFILES[name]


def _get(params: Mapping[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise DrsegInputError(f"params.yaml: {path} is missing (a profile refers to it)")
        node = node[part]
    return node


def _merge(dst: dict, src: Mapping[str, Any], where: str) -> None:
    """Merge ``src`` into ``dst`` in place: mappings recursively, everything else replaces."""
    for key, value in src.items():
        if isinstance(value, Replace):
            dst[key] = copy.deepcopy(value.value)
        elif isinstance(value, Mapping):
            if key in dst and dst[key] is not None and not isinstance(dst[key], Mapping):
                raise DrsegInputError(f"{where}.{key}: a mapping cannot replace the value "
                                      f"{dst[key]!r} of params.yaml")
            if not isinstance(dst.get(key), dict):
                dst[key] = {}
            _merge(dst[key], value, f"{where}.{key}")
        else:
            dst[key] = copy.deepcopy(value)


def _resolve_refs(node: Any, root: Mapping[str, Any]) -> Any:
    if isinstance(node, Ref):
        return copy.deepcopy(_get(root, node.path))
    if isinstance(node, dict):
        return {k: _resolve_refs(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, root) for v in node]
    return node


def _flat_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += _flat_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def profile_keys(name: str) -> list[str]:
    """Dotted params keys a profile sets (sorted), e.g. ``["evaluate.device", ...]``."""
    return sorted(_flat_keys(get_profile(name).values))


def _check_overrides(overrides: Any) -> dict:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise DrsegInputError(f"params.yaml: overrides must be a mapping of blocks, got {overrides!r}")
    for block, values in overrides.items():
        if block not in OVERRIDABLE:
            raise DrsegInputError(f"params.yaml: overrides.{block}: not a block that can be "
                                  f"overridden ({', '.join(OVERRIDABLE)})")
        if values is not None and not isinstance(values, Mapping):
            raise DrsegInputError(f"params.yaml: overrides.{block} must be a mapping of keys, "
                                  f"got {values!r}")
    return {k: v for k, v in overrides.items() if v}


def _check_weights_block(weights: Any) -> dict:
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise DrsegInputError(f"params.yaml: weights must be a mapping, got {weights!r}")
    unknown = sorted(set(weights) - set(WEIGHT_KEYS))
    if unknown:
        raise DrsegInputError(f"params.yaml: weights.{unknown[0]}: unknown key (known: "
                              f"{', '.join(WEIGHT_KEYS)})")
    return dict(weights)


def apply_profile(params: Mapping[str, Any]) -> dict:
    """Params with the selected profile and the ``overrides`` block applied.

    Precedence, lowest first: the params.yaml blocks, the profile's values, the ``overrides``
    block (``{block: {key: value}}``, merged recursively). :class:`Ref` values of the profile
    are resolved last, so ``evaluate.nproc`` follows ``train.nproc`` whichever level set it.
    The input is not modified.

    Args:
        params: the params.yaml mapping (``profile`` missing or null = ``embedded``).

    Returns:
        a new dict; ``profile`` holds the profile name, ``overrides`` stays as given.

    Raises:
        DrsegInputError: unknown profile, malformed ``overrides`` / ``weights`` block, or an
            override that puts a mapping where params.yaml has a value.
    """
    if not isinstance(params, Mapping):
        raise DrsegInputError("params.yaml: expected a mapping at the top level")
    prof = get_profile(params.get("profile"))
    overrides = _check_overrides(params.get("overrides"))
    weights = _check_weights_block(params.get("weights"))
    out = copy.deepcopy(dict(params))
    out["profile"] = prof.name
    out["weights"] = {k: weights.get(k) for k in WEIGHT_KEYS}  # every key, null when unset
    _merge(out, prof.values, f"profile {prof.name}")
    _merge(out, overrides, "overrides")
    out = _resolve_refs(out, out)
    if prof.name == DEFAULT_PROFILE:
        unused = [k for k in WEIGHT_KEYS if weights.get(k) is not None]
        if unused:
            log.warning("profile embedded does not use weights.%s (the tiny models of the "
                        "embedded suite); choose a paper profile to use them", ", weights.".join(unused))
    return out


# --------------------------------------------------------------------------- input checks

def _set_hint(key: str, example: str) -> str:
    return f"set it with dvc exp run -S {key}={example}"


def check_weights(params: Mapping[str, Any]) -> list[Path]:
    """Check the ``weights`` files before any work starts.

    Every non-null ``weights.*`` path must be an existing file, and a profile's required
    keys (:attr:`Profile.weights`) must be set. Only existence is checked here (fast); a file
    of the wrong architecture fails when the model is built, with the mismatched keys named.

    Args:
        params: params with the profile applied (:func:`apply_profile`) or raw params.yaml.

    Returns:
        the checked files.

    Raises:
        DrsegInputError: naming the param, the file and the command that sets it.
    """
    prof = get_profile(params.get("profile"))
    weights = _check_weights_block(params.get("weights"))
    checked = []
    for key in WEIGHT_KEYS:
        value = weights.get(key)
        what = prof.weights.get(key) or WEIGHT_FILES.get(key, "the checkpoint file")
        param = f"weights.{key}"
        if value is None:
            if key in prof.weights:
                raise DrsegInputError(f"{param} is not set; profile {prof.name} needs {what}; "
                                      + _set_hint(param, "/absolute/path/of/the/file"))
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            raise DrsegInputError(f"{param}: {path} does not exist ({what}); "
                                  + _set_hint(param, "/absolute/path/of/the/file"))
        if not path.is_file():
            raise DrsegInputError(f"{param}: {path} is not a file ({what}); "
                                  + _set_hint(param, "/absolute/path/of/the/file"))
        checked.append(path)
    return checked


def check_inputs(params: Mapping[str, Any]) -> None:
    """All inputs of a profile that come from outside the repository, before any work.

    :func:`check_weights`, and with ``prepare.suite: rskt`` an existing
    ``prepare.archive_root`` folder.

    Raises:
        DrsegInputError: naming the param and what is wrong.
    """
    check_weights(params)
    prep = params.get("prepare") or {}
    if prep.get("suite") == "rskt":
        root = prep.get("archive_root")
        if not root:
            raise DrsegInputError("prepare.archive_root must be set when prepare.suite is rskt "
                                  "(the benchmark archive is read in place); "
                                  + _set_hint("prepare.archive_root", "/data/rs-ovss"))
        if not Path(str(root)).expanduser().is_dir():
            raise DrsegInputError(f"prepare.archive_root: {root} is not a folder; "
                                  + _set_hint("prepare.archive_root", "/data/rs-ovss"))


# --------------------------------------------------------------------------- command line

def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m drseg profile``."""
    ap.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    ap.add_argument("--list", action="store_true", help="list the profiles and exit")
    ap.add_argument("--no-check", action="store_true", help="do not check weights / archive")


def run(args: argparse.Namespace) -> int:
    """Print the resolved params (YAML) of ``--params`` after checking its inputs."""
    import yaml

    if args.list:
        for prof in PROFILES.values():
            print(f"{prof.name:22s} {prof.description}")
        return 0
    path = Path(args.params)
    if not path.is_file():
        raise DrsegInputError(f"{path}: params file not found")
    raw = yaml.safe_load(path.read_text())
    resolved = apply_profile(raw)
    if not args.no_check:
        check_inputs(resolved)
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m drseg.profiles [--list] [--params params.yaml]``."""
    ap = argparse.ArgumentParser(prog="python -m drseg.profiles", description=__doc__.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except DrsegInputError as err:
        print(f"drseg profile: error: {err}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
