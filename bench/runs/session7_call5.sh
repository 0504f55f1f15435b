#!/bin/bash
# Session 7, device call 5 (four H200s of one host; every sequence at once, <= 370 s, plus the
# ~10 s pip prefix; the session has ~470 s of device time left, so nothing that compiles long)
#   bash bench/runs/session7_call5.sh $OUT
#   GPU 0:    the paper-profile GPU test end to end (prepare, SPSD, 12 compiled training
#             iterations through train() with this session's defaults: prefetch, code digest;
#             noslide evaluation of the eight datasets), random full-size stand-in checkpoints;
#             it was cut by its 60 s timeout in call 3 (~250 s in session 5)
#   GPUs 1-3: the eager loop with 1 process (GPU 1), then 2 processes (GPUs 2+3), one after the
#             other and beside no compile: is the eager 2-process slowdown CPU contention?
set -u
O=$1
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 DRSEG_SMOKE_OUT=$O/paper_profile_smoke.json timeout 370 python3 -m pytest -q -s -m gpu \
   -p no:cacheprovider tests/test_profiles.py 2>&1 | log paper
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 120 $R --nproc_per_node 1 $D --out $O/ddp_e1.json 2>&1 | log e1
 CUDA_VISIBLE_DEVICES=2,3 timeout 140 $R --nproc_per_node 2 $D --out $O/ddp_e2.json 2>&1 | log e2
 python3 bench/ddp_bench.py --summarize $O/ddp_e1.json $O/ddp_e2.json --out $O/ddp_eager_scaling.json 2>&1 | log summary
 echo "GPUs 1-3 done at ${SECONDS}s" | log main) &
wait
grep -e "ddp x" -e "done at" -e "Error" -e "passed" -e "failed" -e "scaling" -e "smoke:" $O/all.log
