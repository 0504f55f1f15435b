#!/bin/bash
# Session 7, device call A (two H200s of one host; timeouts add up to <= 580 s):
#   bash bench/runs/next_call_a.sh $OUT
# Sized from session 6: a compiled reduce-overhead step bench took ~215 s with another compile
# beside it (call 2), and one compile per GPU per phase; every timeout >= 1.4x that.
# phase A (<= 320 s), at once, one compile per GPU:
#   GPU 0: the whole step, compiled reduce-overhead, defaults (session 6's contiguous window
#          bias never ran on a GPU: expect the unshifted Swin blocks on memory-efficient attention)
#   GPU 1: the same with the class step on the channels-last volume
# phase B (<= 250 s), at once:
#   GPU 0: the aggregator compiled alone, defaults, 40 kernels
#   GPU 1: the same, channels-last volume
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
S="bench/engine_breakdown.py --no-eager"
CL="--set drseg.models.aggregator.CHANNELS_LAST_VOLUME=cuda"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 320 python3 $S --no-components --compile --compile-mode reduce-overhead \
   --out $O/step_default.json 2>&1 | log step0) &
(CUDA_VISIBLE_DEVICES=1 timeout 320 python3 $S --no-components --compile --compile-mode reduce-overhead \
   $CL --out $O/step_channels_last.json 2>&1 | log step1) &
wait
echo "phase A done at ${SECONDS}s" | log main
(CUDA_VISIBLE_DEVICES=0 timeout 250 python3 $S --compile-components --only aggregator --top 40 \
   --out $O/agg_default.json 2>&1 | log agg0) &
(CUDA_VISIBLE_DEVICES=1 timeout 250 python3 $S --compile-components --only aggregator --top 40 $CL \
   --out $O/agg_channels_last.json 2>&1 | log agg1) &
wait
grep -e "STEP" -e "aggregator " -e "phase" -e "Error" $O/all.log
