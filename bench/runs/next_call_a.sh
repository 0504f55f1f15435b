#!/bin/bash
# Session 7, device call A (two H200s of one host; timeouts add up to <= 560 s, plus the
# ~10 s pip prefix):
#   bash bench/runs/next_call_a.sh $OUT
# Timeouts >= 1.5x the last measured time of the same job with as many compiles beside it:
# a compiled reduce-overhead step bench took ~215 s beside another compile (session 6, call 2).
# phase A (<= 330 s), at once, one compile per GPU:
#   GPU 0: the whole step, compiled reduce-overhead, defaults (session 6's contiguous window
#          bias has not run on a GPU: expect the unshifted Swin blocks on memory-efficient
#          attention, no _safe_softmax kernels)
#   GPU 1: the same with the class step on the channels-last volume
# phase B (<= 230 s), at once:
#   GPU 0: sdpa_probe (each Swin block's SDPA kernel; session 6: unshifted 2.36 ms compiled on
#          the math path), then the aggregator compiled alone, defaults
#   GPU 1: the aggregator compiled alone, channels-last volume
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
S="bench/engine_breakdown.py --no-eager"
CL="--set drseg.models.aggregator.CHANNELS_LAST_VOLUME=cuda"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 330 python3 $S --no-components --compile --compile-mode reduce-overhead \
   --out $O/step_default.json 2>&1 | log step0) &
(CUDA_VISIBLE_DEVICES=1 timeout 330 python3 $S --no-components --compile --compile-mode reduce-overhead \
   $CL --out $O/step_channels_last.json 2>&1 | log step1) &
wait
echo "phase A done at ${SECONDS}s" | log main
(CUDA_VISIBLE_DEVICES=0 timeout 90 python3 bench/sdpa_probe.py --out $O/sdpa_probe.json 2>&1 | log sdpa
 CUDA_VISIBLE_DEVICES=0 timeout 140 python3 $S --compile-components --only aggregator --top 40 \
   --out $O/agg_default.json 2>&1 | log agg0) &
(CUDA_VISIBLE_DEVICES=1 timeout 230 python3 $S --compile-components --only aggregator --top 40 $CL \
   --out $O/agg_channels_last.json 2>&1 | log agg1) &
wait
grep -e "STEP" -e "aggregator " -e "shift" -e "phase" -e "Error" $O/all.log
