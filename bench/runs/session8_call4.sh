#!/bin/bash
# Session 8, device call 4 (one H200 enough; ~240 s of device time left): the mended
# frozen-casts GPU tests, and whether two runs of the same code on CUDA (eager, tiny model,
# casts off) give the same losses: the reason the CUDA tests compare only the first loss.
#   bash bench/runs/session8_call4.sh $OUT
set -u
O=$1
timeout 90 python3 -m pytest -q -rA -m gpu -p no:cacheprovider tests/test_train.py tests/test_models_layers.py \
  -k frozen_casts 2>&1 | tee $O/pytest.log | tail -8
timeout 60 python3 - <<'PY' 2>&1 | tee $O/repeat.log | tail -4
import tempfile, torch
from drseg.engine.distributed import DistInfo
from drseg.engine.train import TrainConfig, train
from drseg.models import layers
from drseg.models.drseg import build_model, make_config
import sys; sys.path.insert(0, "tests")
from test_train import VOCAB, ColourBlobs
layers.CAST_FROZEN_WEIGHTS = "never"
runs = []
for r in range(2):
    torch.manual_seed(0)
    model = build_model(make_config("tiny")).cuda()
    cfg = TrainConfig(iterations=3, batch_size=4, lr=1e-2, clip_lr_mult=0.1, grad_clip=1.0, crop=16,
                      checkpoint_every=3, amp="bf16", device="cuda")
    with tempfile.TemporaryDirectory() as d:
        res = train(model, ColourBlobs(), VOCAB, cfg, d, model_cfg={"preset": "tiny"}, train_dataset="blobs",
                    fingerprint="fp", progress=False, dist_info=DistInfo(device=torch.device("cuda")))
    runs.append([v for _, v, _ in res.losses])
print("REPEAT casts off, run 1:", runs[0])
print("REPEAT casts off, run 2:", runs[1])
print("REPEAT identical:", runs[0] == runs[1])
PY
