#!/bin/bash
# Session 8, device call 3 (four H200s of one host, nvidia-h200-x4; ~600 s of device time
# left, the machine starting cold: every job <= 400 s, plus the ~10 s pip prefix):
#   bash bench/runs/session8_call3.sh $OUT
# The new defaults (fused AdamW, frozen weights cast once) under DDP with CUDA graphs, and the
# GPU test that call 2 ran wrongly (it trained on the CPU: the device comes from dist_info).
#   GPUs 0+1: the 2-process loop, compiled reduce-overhead, CUDA graphs under DDP: the replica
#             check and the 2-GPU scaling against GPU 2, same call
#   GPU 2:    the 1-process loop, same settings (call 2: 46.6 ms/it)
#   GPU 3:    the GPU tests of the loop
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0,1 timeout 400 $R --nproc_per_node 2 $D --out $O/ddp_c2.json 2>&1 | log c2
 echo "GPUs 0+1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 400 $R --nproc_per_node 1 $D --out $O/ddp_c1.json 2>&1 | log c1
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 120 python3 -m pytest -q -rA -m gpu -p no:cacheprovider tests/test_train.py \
   2>&1 | log pytest
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
python3 bench/ddp_bench.py --summarize $O/ddp_c1.json $O/ddp_c2.json --out $O/ddp_scaling.json 2>&1 | log summary
grep -e "ddp x" -e "done at" -e "Error" -e "PASSED" -e "FAILED" -e "passed" -e "failed" -e "scaling" $O/all.log
