"""Distributed set-up through torch's own launcher (``torchrun`` / ``torch.distributed.run``).

One process per device. The process count is a parameter (``train.nproc``); the stage script
re-launches itself through :func:`launch` when it is larger than one and the process is not
already under a launcher, and multi-machine runs call ``torchrun --nnodes ...`` directly (the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` tell the rest).
No device id is ever hard-coded: process ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from drseg.errors import DrsegInputError

__all__ = ["DistInfo", "under_launcher", "init_distributed", "cleanup", "launch", "all_reduce_sum",
           "resolve_device", "barrier", "cuda_math"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, its local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def cuda_math(device: torch.device, tf32: bool, cudnn_benchmark: bool):
    """On CUDA, for the duration of the block: TF32 tensor cores for float32 matmuls and
    convolutions (``tf32``) and cuDNN's algorithm search (``cudnn_benchmark``); the previous
    settings come back afterwards. Nothing on other devices.

    Under bf16 autocast most matmuls are bf16 already; TF32 reaches the float32 ones (losses,
    autocast-disabled blocks). The engine's benchmarks measure with both on. A process that set
    TF32 through torch's newer ``fp32_precision`` API in a way the ``allow_tf32`` flags cannot
    express keeps its TF32 settings (with a warning): torch refuses to mix the two APIs.
    """
    if device.type != "cuda":
        yield
        return
    bench = torch.backends.cudnn.benchmark
    try:
        old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    except RuntimeError as e:  # fp32_precision set per operator: leave TF32 as the process has it
        warnings.warn(f"train/evaluate: TF32 left as set through torch's fp32_precision API ({e})",
                      stacklevel=3)
        old_tf32 = None
    if old_tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        if old_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
        torch.backends.cudnn.benchmark = bench


def under_launcher() -> bool:
    """True when torchrun (or an equivalent) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present) -> this process's device.

    Raises:
        DrsegInputError: ``cuda`` asked for but not available, or an unknown name.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DrsegInputError("train.device: 'cuda' asked for but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    raise DrsegInputError(f"train.device: expected cpu, cuda or auto, got {device!r}")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when launched by torchrun; else a one-process DistInfo.

    NCCL on CUDA, gloo on CPU.

    Args:
        device: ``cpu``, ``cuda`` or ``auto``.
        timeout_s: collective timeout.
    """
    if not under_launcher():
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over processes in place (no-op for one process); returns ``t``."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def launch(nproc: int, argv: Sequence[str], script: str) -> int:
    """Run ``script argv`` under ``torch.distributed.run`` with ``nproc`` processes on this
    machine and return its exit code.

    Args:
        nproc: processes per node (from params).
        argv: the script's own arguments.
        script: path of the script to run.
    """
    if nproc < 1:
        raise DrsegInputError(f"train.nproc: must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", script, *argv]
    return subprocess.call(cmd)
