#!/bin/bash
# Session 10, device call 2 (four H200s of one host, nvidia-h200-x4): the spatial step on
# E-contiguous class maps (drseg.models.aggregator.CONTIGUOUS_SPATIAL_TOKENS, "cuda" by default)
# against the strided maps of session 9 ("never"), as same-call pairs of the compiled step and
# of the 1-process loop. Four compiles only (call 1: five compiles beside each other kept both
# loops compiling past their 400 s).
#   bash bench/runs/session10_call2.sh $OUT
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead --top 60"
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
NEVER="--set drseg.models.aggregator.CONTIGUOUS_SPATIAL_TOKENS=never"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 420 python3 $STEP --out $O/step_contiguous.json 2>&1 | log step_contig
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 420 python3 $STEP $NEVER --out $O/step_strided.json 2>&1 | log step_strided
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 540 $R $D --out $O/ddp_c1_contiguous.json 2>&1 | log loop_contig
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 540 $R $D $NEVER --out $O/ddp_c1_strided.json 2>&1 | log loop_strided
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -a -e "STEP" -e "done at" -e "Error" -e "ddp x" -e "ms/it" $O/all.log | grep -v "it/s\]" | tail -30
