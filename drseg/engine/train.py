"""The training loop of the DR-Seg benchmark protocol (PROTOCOL.md section 1).

AdamW, cosine schedule without warm-up (``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped
per iteration to ``eta_min = 0``, the same curve as detectron2's ``WarmupCosineLR`` with no
warm-up), full-model gradient-norm clipping (detectron2 ``CLIP_TYPE: full_model``), CLIP
parameters at ``clip_lr_mult`` times the base rate (through ``model.parameter_groups``),
random crop / flip / SSD colour jitter (:mod:`drseg.data.transforms`).

Reproducibility: the sample order and each sample's augmentation are pure functions of
``(seed, global sample number)``, so a run resumed from ``last.pt`` (model, optimiser,
scheduler, RNG states, iteration) replays exactly what the uninterrupted run would have done,
with any number of data-loader workers. Under DDP each process takes its contiguous share of
every global batch.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from drseg.data.labels import check_label_ids
from drseg.data.transforms import TrainAugment
from drseg.engine import checkpoint as ckpt
from drseg.engine.distributed import DistInfo, all_reduce_sum, cuda_math
from drseg.errors import DrsegInputError
from drseg.models import layers as model_layers

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "StepLoss", "train", "sample_plan",
           "build_optimizer", "build_scheduler", "config_fingerprint", "code_digest",
           "code_record", "device_batches"]


#: torch.compile modes accepted by ``train.compile_mode``.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: The modes that capture CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: Keep those modes' CUDA graphs under DDP (False: fall back to mode "default" there, which
#: scaled x1.3 from 1 to 2 GPUs in session 4). Validated with mode reduce-overhead on H200s
#: (session 7): 4 processes ran at 50.6 ms per iteration (632 images/s, x3.79 the 1-process
#: loop's 167), the trainable weights of the 4 replicas were bitwise equal after 60
#: iterations, and the loss stayed within 0.004% of the eager 4-process run's (two identical
#: runs differ by about that); 2 processes with the batch prefetch: replicas equal, loss
#: within 0.006% of an eager 2-process run. max-autotune under DDP has not been run.
CUDA_GRAPHS_UNDER_DDP = True
#: On CUDA, copy each batch to the GPU on a side stream one iteration ahead, while the step
#: before it runs (:func:`device_batches`). False: the copy runs on the compute stream, in its
#: order, at the start of the batch's own step (~24 MB of float images and int64 masks a
#: paper-shape batch). The CPU path is the same either way.
PREFETCH_TO_DEVICE = True


@dataclasses.dataclass
class TrainConfig:
    """Training params (the ``train:`` block of params.yaml).

    Paper profile: iterations 30000, batch_size 8, lr 2e-4, weight_decay 1e-4,
    grad_clip 0.01, clip_lr_mult 0.01, crop 384 (ViT-B/16) or 336 (ViT-L/14).
    """

    iterations: int = 300
    batch_size: int = 8          # global batch, split evenly over processes
    lr: float = 2e-4
    weight_decay: float = 1e-4
    clip_lr_mult: float = 0.01   # CLIP parameters train at lr * clip_lr_mult
    grad_clip: float = 0.01      # full-model gradient-norm clip; 0 disables
    crop: int = 64               # random crop side = model input
    flip: bool = True
    color_jitter: bool = True
    seed: int = 0
    checkpoint_every: int = 100  # iterations between atomic `last.pt` writes
    log_every: int = 10          # iterations between loss syncs / logs (CPU checks every step)
    num_workers: int = 0
    prefetch_factor: int = 4
    device: str = "cpu"          # cpu | cuda | auto
    amp: str = "auto"            # auto (bf16 on CUDA) | bf16 | off
    channels_last: bool = False  # CUDA only; measured 29% slower on H100 (reports/bench)
    compile: bool = False        # torch.compile the model (CUDA only)
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune(-no-cudagraphs)
    fused_optimizer: bool = True   # fused AdamW kernel (CUDA only; -0.4 ms/it compiled, H200)
    tf32: bool = True            # TF32 for float32 matmuls / convolutions (CUDA only)
    cudnn_benchmark: bool = True  # cuDNN algorithm search (CUDA only)
    deterministic: bool = True   # torch.use_deterministic_algorithms on CPU
    ddp_find_unused: bool = False
    nproc: int = 1               # processes (torchrun), read by the stage script

    @classmethod
    def from_params(cls, block: Mapping[str, Any]) -> "TrainConfig":
        """Build from a params block, naming unknown or ill-typed keys.

        Raises:
            DrsegInputError: unknown key, wrong type, or a value out of range.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for k, v in block.items():
            if k not in fields:
                raise DrsegInputError(f"train.{k}: unknown training param (known: {sorted(fields)})")
            default = fields[k].default
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise DrsegInputError(f"train.{k}: expected true/false, got {v!r}")
            elif isinstance(default, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise DrsegInputError(f"train.{k}: expected an integer, got {v!r}")
            elif isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DrsegInputError(f"train.{k}: expected a number, got {v!r}")
                v = float(v)
            kwargs[k] = v
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("iterations", "batch_size", "crop", "checkpoint_every", "log_every", "nproc"):
            if getattr(self, name) < 1:
                raise DrsegInputError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "clip_lr_mult", "grad_clip"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise DrsegInputError(f"train.{name}: must be a finite number >= 0, got {v}")
        if self.compile_mode not in COMPILE_MODES:
            raise DrsegInputError(f"train.compile_mode: expected one of {', '.join(COMPILE_MODES)}, "
                                  f"got {self.compile_mode!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise DrsegInputError(f"train.amp: expected auto, bf16 or off, got {self.amp!r}")
        if self.seed < 0:
            raise DrsegInputError(f"train.seed: must be >= 0, got {self.seed}")
        if self.num_workers < 0:
            raise DrsegInputError(f"train.num_workers: must be >= 0, got {self.num_workers}")


@dataclasses.dataclass
class TrainResult:
    iterations: int
    final_loss: float
    losses: list[tuple[int, float, float]]  # (iteration, loss, lr)
    wall_s: float
    resumed_from: int
    model_path: Path | None
    cuda_graphs: bool = False  # the compiled step kept its CUDA graphs (also under DDP)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the batch's files."""


# ---------------------------------------------------------------------------------------------
# data: a deterministic, resumable sample plan


def _mix(seed: int, stream: int, k: int) -> int:
    """A 63-bit seed for item ``k`` of ``stream`` (0: augmentations, 1: epoch permutations)."""
    return int(np.random.SeedSequence([seed, stream, k]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_plan(n: int, seed: int, iteration: int, batch_size: int, rank: int = 0,
                world_size: int = 1) -> list[tuple[int, int]]:
    """The ``(dataset index, augmentation seed)`` pairs of this process for one iteration.

    Global sample ``k = iteration * batch_size + j`` is element ``k mod n`` of the
    permutation of epoch ``k // n`` (a ``torch.randperm`` seeded by ``(seed, epoch)``); the
    process of rank ``r`` takes ``j`` in ``[r B / W, (r + 1) B / W)``.
    """
    per = batch_size // world_size
    out = []
    perms: dict[int, torch.Tensor] = {}
    for j in range(rank * per, (rank + 1) * per):
        k = iteration * batch_size + j
        epoch, pos = divmod(k, n)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, 1, epoch)))
        out.append((int(perms[epoch][pos]), _mix(seed, 0, k)))
    return out


class _PlanSampler(Sampler):
    """Yields this process's batches for iterations ``start .. stop - 1``."""

    def __init__(self, n, seed, start, stop, batch_size, rank, world_size):
        self.args = (n, seed, batch_size, rank, world_size)
        self.start, self.stop = start, stop

    def __iter__(self):
        n, seed, b, r, w = self.args
        for it in range(self.start, self.stop):
            yield sample_plan(n, seed, it, b, r, w)

    def __len__(self):
        return self.stop - self.start


class _Augmented(Dataset):
    """``dataset[idx]`` augmented with the seed of the sample plan; label ids are checked here,
    in the loader workers, so that the training step needs no host sync for it."""

    def __init__(self, base: Dataset, augment: TrainAugment, num_classes: int,
                 ignore_index: int = 255):
        self.base, self.augment = base, augment
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __len__(self):
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        idx, seed = item
        s = self.base[idx]
        image, mask = self.augment(s["image"], s["mask"], seed)
        path = str(s.get("path", idx))
        check_label_ids(mask, self.num_classes, self.ignore_index, source=path)
        return {"image": image, "mask": mask, "path": path}


def device_batches(batches, device: torch.device, prefetch: bool | None = None,
                   stream: "torch.cuda.Stream | None" = None):
    """Yield ``(batch, images, masks)`` for each loader batch, with ``images`` and ``masks``
    on ``device``.

    On CUDA with ``prefetch`` (default :data:`PREFETCH_TO_DEVICE`), batch i+1 is taken from the
    loader and its host-to-device copy enqueued on a side stream before batch i is handed
    out, so the copy overlaps batch i's step instead of waiting in the compute stream's queue;
    the compute stream waits for the copy (an event, no host sync) before it uses the batch,
    and the tensors are marked as used there (``record_stream``) so that their memory is not
    reused early. Otherwise each batch is copied when it is handed out (a no-op on the CPU).

    With the prefetch, a loader error in batch i+1 (a bad label, an unreadable file) surfaces
    before batch i's step runs, one iteration earlier than without it.

    Args:
        batches: an iterable of loader batches (dicts with "image" and "mask").
        device: where the tensors go.
        prefetch: override :data:`PREFETCH_TO_DEVICE`.
        stream: the side stream to copy on (default: a new one); for tests.
    """
    use_stream = (PREFETCH_TO_DEVICE if prefetch is None else prefetch) and device.type == "cuda"
    if not use_stream:
        for batch in batches:
            yield (batch, batch["image"].to(device, non_blocking=True),
                   batch["mask"].to(device, non_blocking=True))
        return
    stream = stream if stream is not None else torch.cuda.Stream(device)

    def stage(batch):
        with torch.cuda.stream(stream):
            images = batch["image"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
        return batch, images, masks, copied

    it = iter(batches)
    first = next(it, None)
    staged = stage(first) if first is not None else None
    while staged is not None:
        batch, images, masks, copied = staged
        following = next(it, None)
        staged = stage(following) if following is not None else None
        compute = torch.cuda.current_stream(device)
        compute.wait_event(copied)  # this batch's copy only, not the one just enqueued
        images.record_stream(compute)
        masks.record_stream(compute)
        yield batch, images, masks


def _collate(samples: Sequence[dict]) -> dict:
    return {"image": torch.stack([s["image"] for s in samples]),
            "mask": torch.stack([s["mask"] for s in samples]),
            "path": [s["path"] for s in samples]}


# ---------------------------------------------------------------------------------------------
# optimiser and schedule


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model.parameter_groups(lr, clip_lr_mult)`` (plain trainable parameters
    when the model has no such method)."""
    core = ckpt.unwrap(model)
    if hasattr(core, "parameter_groups"):
        groups = core.parameter_groups(cfg.lr, cfg.clip_lr_mult)
    else:
        groups = [{"params": [p for p in core.parameters() if p.requires_grad], "lr": cfg.lr}]
    groups = [g for g in groups if len(list(g["params"])) > 0]
    if not groups:
        raise DrsegInputError("model: no trainable parameters (check the model params)")
    kwargs = {}
    if device.type == "cuda" and cfg.fused_optimizer:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Cosine decay from the base rate to 0 over ``iterations``, no warm-up, per iteration."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.iterations, eta_min=0.0)


def config_fingerprint(*blocks: Mapping[str, Any]) -> str:
    """sha256 of the params that define a run; a resume state from other params is not used."""
    return hashlib.sha256(json.dumps(blocks, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(root: str | Path | None = None) -> str:
    """sha256 of the drseg package's Python sources (relative paths and contents, sorted).

    Part of a run's fingerprint (with the torch version): a ``last.pt`` written by other code
    is not resumed. Without it, a run killed mid-stage, then re-run by ``dvc repro`` after a
    code change (the stage's dependencies changed), continued the old code's state, and its
    result matched neither version (nor what a fresh clone reproduces).

    The installed package's digest (``root`` None) is computed once per process: it describes
    the sources as they were when first asked (about when they were imported), and every call
    in the process, every rank of one launch included, gets the same answer.

    Args:
        root: the package folder (default: this installed ``drseg``).
    """
    if root is None:
        return _installed_code_digest()
    return _sources_digest(Path(root))


def code_record() -> dict[str, str]:
    """What identifies the code of a run: this drseg's :func:`code_digest` and the torch
    version. Stored beside a resume state (a ``last.pt`` with another one is not resumed) and
    part of the train stage's fingerprint."""
    return {"drseg": code_digest(), "torch": torch.__version__}


@functools.lru_cache(maxsize=1)
def _installed_code_digest() -> str:
    return _sources_digest(Path(__file__).resolve().parents[1])


def _sources_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if "__pycache__" in f.parts:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# the loop


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off":
        return None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


class StepLoss(torch.nn.Module):
    """The forward pass and the loss of one training batch, as one module.

    ``StepLoss(model, vocab, amp_dtype)(images, masks)`` is ``model.loss(logits.float(), masks)``
    with ``logits = model(images, vocab)`` under autocast: the same operations in the same order
    as calling the two one after the other. It is what the engine wraps in DDP and compiles:
    with the loss inside the compiled region, the upsampling, one-hot targets and BCE of the loss
    (and their backward) fuse into the graphs instead of running eagerly between two CUDA
    graph replays. ``bench/engine_breakdown.py`` times this same module.

    Args:
        model: the DR-Seg model (``model(images, vocab)``, ``model.loss(logits, masks, check)``).
        vocab: class names in mask-id order.
        amp_dtype: autocast dtype of the forward pass (None: no autocast).
        check: validate the label ids in the loss (off in the engine: its loader checks them).
    """

    def __init__(self, model: torch.nn.Module, vocab: Sequence[str], amp_dtype: torch.dtype | None,
                 check: bool = False):
        super().__init__()
        self.model, self.vocab, self.amp_dtype, self.check = model, list(vocab), amp_dtype, check

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images, (B, H, W) class ids -> the scalar loss."""
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.model(images, self.vocab)
        return self.model.loss(logits.float(), masks, check=self.check)


def _restores_deterministic_algorithms(fn: Callable) -> Callable:
    """Run ``fn`` and then put ``torch.use_deterministic_algorithms`` (and its ``warn_only``)
    back as it was, also after an error: :func:`train` turns it on for a deterministic CPU run,
    for its own duration, not for the rest of the caller's process."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        saved = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
        try:
            return fn(*args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    return wrapper


@_restores_deterministic_algorithms
def train(
    model: torch.nn.Module,
    dataset: Dataset,
    vocab: Sequence[str],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    model_cfg: Mapping[str, Any],
    train_dataset: str,
    channel_index: Mapping[str, Any] | None = None,
    fingerprint: str = "",
    dist_info: DistInfo | None = None,
    on_log: Callable[[dict, int], None] | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with vocabulary ``vocab``.

    Args:
        model: a DR-Seg model (``model(images, vocab) -> (B, K, h, w)`` logits,
            ``model.loss(logits, masks)``), already on ``dist_info.device``.
        dataset: items ``{"image": float32 (3, H, W) 0..255, "mask": int64 (H, W), "path"}``.
        vocab: class names in mask-id order.
        cfg: training params.
        run_dir: holds ``last.pt`` (resume state) and ``model_final.pt`` (drseg-model/1).
        model_cfg: the model params as a dict (stored in the final checkpoint).
        train_dataset: name of the training dataset (stored in the final checkpoint).
        channel_index: the SPSD channel index used, stored in the final checkpoint.
        fingerprint: identifies the params; a ``last.pt`` with another one is not resumed,
            nor one written by other code (:func:`code_record` is stored beside it and
            compared).
        dist_info: process placement (default: one CPU process).
        on_log: called on the main process as ``on_log({"loss": .., "lr": ..}, iteration)``.
        resume: continue from ``run_dir/last.pt`` when it exists and matches.
        progress: show a tqdm bar on the main process.
        stop_after: stop (as if killed) after this many iterations, for tests.

    Returns:
        :class:`TrainResult` with the loss curve (iteration, loss averaged over processes, lr).

    Raises:
        NonFiniteLossError: the loss became NaN/inf; ``last.pt`` stays the last good state.
        DrsegInputError: bad params, an empty dataset, a vocabulary/batch mismatch.
    """
    from tqdm.auto import tqdm

    info = dist_info or DistInfo()
    device = info.device
    run_dir = Path(run_dir)
    if len(dataset) == 0:
        raise DrsegInputError(f"train: the training dataset '{train_dataset}' is empty")
    if len(vocab) < 2:
        raise DrsegInputError(f"train: a vocabulary of {len(vocab)} class(es) ({list(vocab)}) cannot "
                              "be trained for segmentation; give at least 2 classes")
    if cfg.batch_size % info.world_size:
        raise DrsegInputError(f"train.batch_size: {cfg.batch_size} is not divisible by the "
                              f"{info.world_size} processes")
    if device.type == "cpu" and cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed((cfg.seed + info.rank) % 2**32)

    core = ckpt.unwrap(model)
    if device.type == "cuda" and cfg.channels_last:
        core.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(core, cfg, device)
    scheduler = build_scheduler(optimizer, cfg)
    losses: list[tuple[int, float, float]] = []
    start = 0
    state_path = run_dir / "last.pt"
    code = code_record()
    state = None
    if resume and state_path.exists():
        state = ckpt.load_training_state(state_path)
        if state["extra"].get("fingerprint") != fingerprint:
            log.warning("%s: written with other params; starting afresh", state_path)
            state = None
        elif state["extra"].get("code") != code:
            log.warning("%s: written by other code (the drseg sources or the torch version "
                        "differ); starting afresh", state_path)
            state = None
    if info.distributed:  # resume only if every rank can (e.g. a run folder not shared by all
        # machines): ranks that disagreed would train from different iterations and hang
        usable = torch.tensor([float(state is not None)], device=device)
        if all_reduce_sum(usable, info).item() < info.world_size:
            if state is not None:
                log.warning("%s: not every process can resume from its last.pt; all start afresh",
                            state_path)
            state = None
    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
        if info.rank == 0:
            ckpt.set_rng_state(state["rng"])
        else:  # only rank 0's generators are saved; the others reseed from the iteration
            torch.manual_seed(cfg.seed + info.rank + 1_000_003 * start)
        losses = [tuple(x) for x in state["extra"].get("losses", [])]
        log.info("resumed from %s at iteration %d", state_path, start)
    resumed_from = start

    amp_dtype = _amp_dtype(cfg, device)
    net: torch.nn.Module = StepLoss(core, vocab, amp_dtype)  # labels checked in _Augmented
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=cfg.ddp_find_unused)
    graphed = False
    if cfg.compile and device.type == "cuda":
        mode = cfg.compile_mode
        if mode in CUDA_GRAPH_MODES and info.distributed and not CUDA_GRAPHS_UNDER_DDP:
            log.warning("train.compile_mode %s: CUDA graphs under DDP are switched off "
                        "(drseg.engine.train.CUDA_GRAPHS_UNDER_DDP); "
                        "compiling with mode 'default'", mode)
            mode = "default"
        net = torch.compile(net, mode=None if mode == "default" else mode)
        graphed = mode in CUDA_GRAPH_MODES

    stop = cfg.iterations if stop_after is None else min(cfg.iterations, stop_after)
    augment = TrainAugment(cfg.crop, cfg.flip, cfg.color_jitter)
    sampler = _PlanSampler(len(dataset), cfg.seed, start, stop, cfg.batch_size, info.rank, info.world_size)
    loader_kw: dict[str, Any] = {}
    if cfg.num_workers > 0:
        loader_kw.update(persistent_workers=False, prefetch_factor=cfg.prefetch_factor)
    loader = DataLoader(_Augmented(dataset, augment, len(vocab),
                                    getattr(getattr(core, "cfg", None), "ignore_index", 255)),
                        batch_sampler=sampler, collate_fn=_collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda", **loader_kw)
    params = [p for p in core.parameters() if p.requires_grad]
    sync_every = 1 if device.type == "cpu" else cfg.log_every
    pending: list[tuple[int, torch.Tensor, float, list[str]]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.iterations, initial=start, desc="train", unit="it",
               disable=not (progress and info.is_main), dynamic_ncols=True)

    def flush(pend) -> None:
        """Sync the pending losses (averaged over processes), stop on a non-finite one."""
        if not pend:
            return
        vals = torch.stack([p[1] for p in pend]).float()
        all_reduce_sum(vals, info)
        vals = (vals / info.world_size).tolist()
        for (it, _, lr, paths), v in zip(pend, vals):
            if not math.isfinite(v):
                raise NonFiniteLossError(
                    f"train: loss is {v} at iteration {it + 1} (batch files: {', '.join(paths)}); "
                    f"stopped; the last good state is {state_path if state_path.exists() else 'none'}")
            losses.append((it + 1, v, lr))
        if info.is_main:
            it, _, lr, _ = pend[-1]
            bar.set_postfix(loss=f"{vals[-1]:.4f}", lr=f"{lr:.2e}")
            if on_log is not None:
                on_log({"loss": vals[-1], "lr": lr}, it + 1)
        pend.clear()

    model.train()
    it = start
    # frozen weights (the prior, CLIP's MLPs) cast to the autocast dtype once, not every step
    casts = model_layers.frozen_casts(core, amp_dtype)  # CUDA by default (CAST_FROZEN_WEIGHTS)
    try:
        with casts, cuda_math(device, cfg.tf32, cfg.cudnn_benchmark):
            for it, (batch, images, masks) in zip(range(start, stop), device_batches(loader, device)):
                if device.type == "cuda" and cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                lr = max(g["lr"] for g in optimizer.param_groups)  # the base rate (CLIP runs lower)
                if graphed:  # a new iteration: outputs of the previous graph replay may be reused
                    torch.compiler.cudagraph_mark_step_begin()
                loss = net(images, masks)  # StepLoss: forward under autocast, then the loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                # with CUDA graphs the loss is an output buffer of the graph, which the next
                # iteration's replay overwrites: keep a copy until the next loss sync
                pending.append((it, loss.detach().clone() if graphed else loss.detach(), lr,
                                batch["path"]))
                bar.update(1)
                done = it + 1
                if len(pending) >= sync_every or done == stop or done % cfg.checkpoint_every == 0:
                    flush(pending)
                if done % cfg.checkpoint_every == 0 or done == stop:
                    if info.is_main:
                        _save_state(state_path, core, optimizer, scheduler, done, fingerprint, code,
                                    losses)
                    if info.distributed:
                        torch.distributed.barrier()
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    model_path = None
    if stop == cfg.iterations and info.is_main:
        model_path = ckpt.save_model_checkpoint(
            run_dir / "model_final.pt", model=core, model_cfg=model_cfg, iteration=cfg.iterations,
            train_dataset=train_dataset, channel_index=channel_index)
    final = losses[-1][1] if losses else math.nan
    return TrainResult(iterations=stop, final_loss=final, losses=losses, wall_s=wall,
                       resumed_from=resumed_from, model_path=model_path, cuda_graphs=graphed)


def _save_state(path, core, optimizer, scheduler, done, fingerprint, code, losses) -> None:
    ckpt.save_training_state(path, model=core, optimizer=optimizer, scheduler=scheduler,
                             iteration=done, extra={"fingerprint": fingerprint, "code": code,
                                                   "losses": list(losses)})


def write_loss_curve(losses: Sequence[tuple[int, float, float]], path: str | Path) -> Path:
    """Write ``iteration,loss,lr`` rows as CSV (a ``dvc plots`` source)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "loss", "lr"])
        for it, loss, lr in losses:
            w.writerow([it, f"{loss:.6g}", f"{lr:.6g}"])
    return path
