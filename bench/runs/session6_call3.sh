#!/bin/bash
# Session 6, device call 3 (two H200s; timeouts add up to <= 555 s):
#   bash bench/runs/session6_call3.sh $OUT
# phase A (<= 290 s), at once:
#   GPU 0: the whole step, compiled reduce-overhead (contiguous window bias, channels-last volume)
#   GPU 1: the 1-process training loop, compiled reduce-overhead (the DDP scaling baseline)
# phase B (<= 265 s): the 2-process training loop, compiled reduce-overhead with CUDA graphs under
#   DDP (now the default), with the replicas' weights compared at the end
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 290 python3 bench/engine_breakdown.py --no-components --no-eager --compile \
   --compile-mode reduce-overhead --out $O/step_ro.json 2>&1 | log step) &
(CUDA_VISIBLE_DEVICES=1 timeout 290 $R --nproc_per_node 1 $D --out $O/ddp_c1_ro.json 2>&1 | log c1ro) &
wait
echo "phase A done at ${SECONDS}s" | log main
timeout 265 $R --nproc_per_node 2 $D --out $O/ddp_c2_ro.json 2>&1 | log c2ro
grep -e "ddp x" -e "Error" -e "STEP" -e "phase" -e "    " $O/all.log | grep -v "dynamo\|Warning" | tail -30
