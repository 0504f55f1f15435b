"""Two CPU processes (gloo DDP) against one: same evaluation metrics, same training result;
the ranks resume from last.pt together or not at all."""
from __future__ import annotations

import contextlib
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from drseg.engine.distributed import cleanup, init_distributed
from drseg.engine.evaluate import EvalConfig, evaluate_dataset
from drseg.engine.train import TrainConfig, train

VOCAB = ["red roof", "grass", "water", "sand"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg():
    return TrainConfig(iterations=6, batch_size=4, lr=1e-2, crop=16, checkpoint_every=3, grad_clip=1.0,
                       clip_lr_mult=0.1, seed=0)


@contextlib.contextmanager
def _rank(rank: int, world: int, port: int, device: str = "cpu"):
    """This process as rank ``rank`` of a group of ``world`` (gloo on the CPU with one thread,
    NCCL on ``cuda:rank``); restores the environment and thread count afterwards."""
    saved = dict(os.environ)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    info = init_distributed(device)
    try:
        yield info
    finally:
        cleanup()
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(saved)


def _job(rank: int, world: int, port: int, out: str) -> None:
    from test_train import ColourBlobs, TinySeg

    with _rank(rank, world, port) as info:
        torch.manual_seed(123)
        model = TinySeg()
        res = train(model, ColourBlobs(n=12, h=16, w=16), VOCAB, _cfg(), os.path.join(out, "run"),
                    model_cfg={}, train_dataset="blobs", dist_info=info, progress=False)
        conf, _ = evaluate_dataset(model.eval(), ColourBlobs(n=7, seed=5), VOCAB,
                                   EvalConfig(input_size=12, short_side=20, batch_size=2), info, progress=False)
        if info.is_main:
            torch.save({"state": model.state_dict(), "losses": res.losses, "conf": conf}, os.path.join(out, "r.pt"))


def _run(world: int, out) -> dict:
    os.makedirs(out, exist_ok=True)
    if world == 1:
        _job(0, 1, _free_port(), str(out))
    else:
        mp.spawn(_job, args=(world, _free_port(), str(out)), nprocs=world, join=True)
    return torch.load(os.path.join(out, "r.pt"))


def test_two_process_gloo_matches_one_process(tmp_path):
    one = _run(1, tmp_path / "one")
    two = _run(2, tmp_path / "two")
    # evaluation: each process scores half the images; the summed matrix is the same integer matrix
    assert torch.equal(one["conf"], two["conf"])
    # training: the global batch is split 2 x 2 instead of 1 x 4; every crop holds the same
    # number of ignore pixels, so the per-process mean losses average to the global mean and
    # the weights agree to rounding
    for k in one["state"]:
        torch.testing.assert_close(one["state"][k], two["state"][k], rtol=1e-4, atol=1e-5)
    assert [i for i, _, _ in one["losses"]] == [i for i, _, _ in two["losses"]]
    torch.testing.assert_close(torch.tensor([l for _, l, _ in one["losses"]]),
                               torch.tensor([l for _, l, _ in two["losses"]]), rtol=1e-4, atol=1e-6)


def _resume_job(rank: int, world: int, port: int, out: str, fingerprints: tuple,
                device: str = "cpu") -> None:
    """Train 2 of 6 iterations (state kept), then rerun with this rank's fingerprint."""
    from test_train import ColourBlobs, TinySeg

    with _rank(rank, world, port, device) as info:
        cfg = TrainConfig(iterations=6, batch_size=4, lr=1e-2, crop=16, checkpoint_every=2, seed=0)
        run = os.path.join(out, "run")
        first = train(TinySeg().to(info.device), ColourBlobs(n=12, h=16, w=16), VOCAB, cfg, run,
                      model_cfg={}, train_dataset="blobs", fingerprint="fp", dist_info=info,
                      progress=False, stop_after=2)
        again = train(TinySeg().to(info.device), ColourBlobs(n=12, h=16, w=16), VOCAB, cfg, run,
                      model_cfg={}, train_dataset="blobs", fingerprint=fingerprints[rank],
                      dist_info=info, progress=False)
        torch.save({"first": first.iterations, "resumed_from": again.resumed_from,
                    "iterations": again.iterations}, os.path.join(out, f"rank{rank}.pt"))


def _resume_run(out, fingerprints, device="cpu") -> list[dict]:
    os.makedirs(out, exist_ok=True)
    mp.spawn(_resume_job, args=(2, _free_port(), str(out), fingerprints, device), nprocs=2, join=True)
    return [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_ranks_resume_together_or_not_at_all(tmp_path, device):
    """Every rank resumes from last.pt, or none does: a rank that cannot (here: another
    fingerprint on rank 1; in practice a run folder that one machine does not see) makes all
    start afresh, where before the others would have resumed and trained from other
    iterations. On gloo (CPU) and on NCCL (two GPUs)."""
    if device == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs two CUDA devices")
    same = _resume_run(tmp_path / "same", ("fp", "fp"), device)
    assert [r["resumed_from"] for r in same] == [2, 2]
    split = _resume_run(tmp_path / "split", ("fp", "other"), device)
    assert [r["resumed_from"] for r in split] == [0, 0]
    assert all(r["iterations"] == 6 for r in same + split)
