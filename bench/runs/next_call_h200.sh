#!/bin/bash
# Owed after session 10 when only H200s are lent (bench/notes/next_device_calls.md, item 2: the
# class step on the channels-last volume, 42.9 against 43.2 ms/it in one loop pair of session
# 10, call 4, within the spread). Four H200s of one host (nvidia-h200-x4), four compiles, each
# in its own inductor cache folder; ~350 s plus the ~10 s pip prefix:
#   bash bench/runs/next_call_h200.sh $OUT
#   GPU 0 / 1: the compiled step, defaults / CHANNELS_LAST_VOLUME=cuda
#   GPU 2 / 3: the 1-process loop, defaults / CHANNELS_LAST_VOLUME=cuda
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead --top 60"
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
CLV="--set drseg.models.aggregator.CHANNELS_LAST_VOLUME=cuda"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
job() {  # job GPU NAME TIMEOUT COMMAND...
  local g=$1 name=$2 t=$3; shift 3
  (CUDA_VISIBLE_DEVICES=$g TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_$name timeout $t "$@" 2>&1 | log $name
   echo "GPU $g done at ${SECONDS}s" | log main) &
}
job 0 step 420 python3 $STEP --out $O/step_default.json
job 1 step_clv 420 python3 $STEP $CLV --out $O/step_channels_last_volume.json
job 2 loop 480 $R $D --out $O/ddp_c1_default.json
job 3 loop_clv 480 $R $D $CLV --out $O/ddp_c1_channels_last_volume.json
wait
grep -a -e "STEP" -e "done at" -e "Error" -e "ddp x" $O/all.log | grep -v "it/s\]" | tail -30
