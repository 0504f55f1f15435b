#!/bin/bash
# Session 10, device call 1 (four H200s of one host, nvidia-h200-x4): bench/runs/next_call_h200.sh
# (the GPU tests of the narrowed FlexAttention condition, the loop at the defaults against the
# loop with inductor's max_autotune_pointwise, the compiled evaluation), plus, beside the tests
# on GPU 0, one compiled step with TORCH_LOGS=output_code: the Triton source of the step's
# kernels, to read the aggregator's layer norms over the permuted volume (session 9: two
# kernels of ~0.55 ms each for a ~20 MB volume) on this machine, not on the device.
#   bash bench/runs/session10_call1.sh $OUT
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 TORCH_LOGS=output_code timeout 420 python3 bench/engine_breakdown.py \
   --no-eager --no-components --compile --compile-mode reduce-overhead --top 60 \
   --out $O/step_code.json > $O/output_code.log 2>&1
 echo "code dump rc=$? at ${SECONDS}s" | log main
 gzip -9 $O/output_code.log) &
bash bench/runs/next_call_h200.sh $O
wait
grep -e "code dump" $O/all.log
ls -la $O
