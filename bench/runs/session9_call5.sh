#!/bin/bash
# Session 9, device call 5 (four H200s of one host, nvidia-h200-x4; the last ~400 s of the
# session's device time): three inductor options that need no code, each against the default
# step of the same call (no loop: no time left for one).
#   bash bench/runs/session9_call5.sh $OUT
#   GPU 0: whole step, defaults (the pair)
#   GPU 1: torch._inductor.config.max_autotune_pointwise=true (benchmarks the launch configs of
#          the Triton pointwise / reduction kernels; the aggregator's layer norms over the
#          permuted volume run at a few hundred GB/s)
#   GPU 2: torch._inductor.config.aggressive_fusion=true
#   GPU 3: torch._inductor.config.combo_kernels=true (independent kernels fused side by side)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
for i in 0:default: 1:pointwise:max_autotune_pointwise 2:aggressive:aggressive_fusion 3:combo:combo_kernels; do
  (IFS=: read g name opt <<< "$i"
   SET=""; [ -n "$opt" ] && SET="--set torch._inductor.config.$opt=true"
   CUDA_VISIBLE_DEVICES=$g timeout 370 python3 $STEP $SET --out $O/step_$name.json 2>&1 | log $name
   echo "GPU $g done at ${SECONDS}s" | log main) &
done
wait
grep -e "STEP" -e "done at" -e "Error" $O/all.log
