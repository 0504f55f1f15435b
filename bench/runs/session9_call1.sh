#!/bin/bash
# Record of call 1: the "explicit" and "explicit_bf16" modes were removed after it (slower),
# so GPU 2 of this script now stops on an unknown WINDOW_ATTENTION.
# Session 9, device call 1 (four H200s of one host, nvidia-h200-x4; every GPU runs its own
# sequence at once, the longest <= 540 s, plus the ~10 s pip prefix):
#   bash bench/runs/session9_call1.sh $OUT
# New code: drseg.models.aggregator.window_attention with the switch WINDOW_ATTENTION
# ("sdpa" = the memory-efficient SDPA kernel as before, "explicit", "explicit_bf16", "flex");
# train()/evaluate_dataset() apply train.tf32 / train.cudnn_benchmark themselves.
#   GPU 0: bench/window_attention_probe.py (every mode, one block each), then the GPU tests
#   GPU 1: whole step, WINDOW_ATTENTION=sdpa (the default; the pair of GPUs 2 and 3)
#   GPU 2: whole step, WINDOW_ATTENTION=explicit
#   GPU 3: whole step, WINDOW_ATTENTION=flex
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 240 python3 bench/window_attention_probe.py --out $O/window_attention.json 2>&1 | log probe
 CUDA_VISIBLE_DEVICES=0 timeout 240 python3 -m pytest -q -rA -m gpu -p no:cacheprovider \
   tests/test_models_split_guidance.py tests/test_train.py 2>&1 | log pytest
 echo "GPU 0 done at ${SECONDS}s" | log main) &
for i in 1:sdpa 2:explicit 3:flex; do
  (g=${i%%:*}; m=${i#*:}
   CUDA_VISIBLE_DEVICES=$g timeout 420 python3 $STEP --set drseg.models.aggregator.WINDOW_ATTENTION=$m \
     --out $O/step_$m.json 2>&1 | log $m
   echo "GPU $g done at ${SECONDS}s" | log main) &
done
wait
grep -e "STEP" -e "shift" -e "done at" -e "Error" -e "PASSED" -e "FAILED" -e "passed" -e "failed" $O/all.log
