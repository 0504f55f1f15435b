#!/bin/bash
# Session 7, device call C (two H200s of one host; timeouts <= 380 s, plus the ~10 s pip prefix):
#   bash bench/runs/next_call_c.sh $OUT
# at once, one compile per GPU:
#   GPU 0: the 1-process training loop, compiled reduce-overhead: the baseline of call B's
#          scaling ratio (never finished in session 6: cut at 270 s and 290 s beside other
#          compiles; its compile is about that of the step bench, ~215 s beside another)
#   GPU 1: the whole step with the CLIP / prior attention off cuDNN (flash / memory-efficient
#          kernels), to pair with call A's GPU-0 step
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 380 python3 -m torch.distributed.run --standalone --nproc_per_node 1 \
   bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead \
   --out $O/ddp_c1_ro.json 2>&1 | log c1ro) &
(CUDA_VISIBLE_DEVICES=1 timeout 330 python3 bench/engine_breakdown.py --no-eager --no-components --compile \
   --compile-mode reduce-overhead --sdpa-no-cudnn --out $O/step_no_cudnn.json 2>&1 | log step) &
wait
grep -e "ddp x" -e "STEP" -e "Error" $O/all.log
