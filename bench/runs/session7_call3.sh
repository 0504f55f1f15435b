#!/bin/bash
# Session 7, device call 3 (four H200s of one host, nvidia-h200-x4; every GPU runs its own
# sequence at once, the longest <= 480 s, plus the ~10 s pip prefix):
#   bash bench/runs/session7_call3.sh $OUT
# The 1-process loop took 314 s with three other compiles beside it (call 1): 420 s is 1.34x,
# and the 2-process loop ~249 s alone (session 6): 420 s is 1.7x.
#   GPUs 0+1: the 2-process loop, compiled reduce-overhead, CUDA graphs kept under DDP, with
#             the batch prefetch (the new default): the 2-GPU scaling, same call as its baseline;
#             the replica check
#   GPU 2:    the 1-process loop, same settings (prefetch on): the baseline
#   GPU 3:    the 1-process loop, prefetch off (the copy on the compute stream, as before),
#             then the GPU-only tests (the prefetch's own test among them)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0,1 timeout 420 $R --nproc_per_node 2 $D --ddp-cuda-graphs \
   --out $O/ddp_c2_ro_prefetch.json 2>&1 | log c2ro
 echo "GPUs 0+1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 420 $R --nproc_per_node 1 $D --out $O/ddp_c1_ro_prefetch.json 2>&1 | log c1pf
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 420 $R --nproc_per_node 1 $D --set drseg.engine.train.PREFETCH_TO_DEVICE=false \
   --out $O/ddp_c1_ro_no_prefetch.json 2>&1 | log c1np
 CUDA_VISIBLE_DEVICES=3 timeout 60 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_train.py \
   tests/test_models.py tests/test_profiles.py 2>&1 | log pytest
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
python3 bench/ddp_bench.py --summarize $O/ddp_c1_ro_prefetch.json $O/ddp_c2_ro_prefetch.json \
  --out $O/ddp_scaling.json 2>&1 | log summary
grep -e "ddp x" -e "done at" -e "Error" -e "passed" -e "failed" -e "scaling" $O/all.log
