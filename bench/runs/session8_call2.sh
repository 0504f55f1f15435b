#!/bin/bash
# Session 8, device call 2 (four H200s of one host, nvidia-h200-x4; every GPU runs its own
# sequence at once, the longest <= 540 s, plus the ~10 s pip prefix):
#   bash bench/runs/session8_call2.sh $OUT
# New code: drseg.models.layers.frozen_casts (the frozen Linear weights cast to bf16 once per
# run, CAST_FROZEN_WEIGHTS="cuda"), the fused AdamW as the loop's default.
#   GPU 0: whole step, defaults (casts kept), then the GPU tests of the loop and the layers
#   GPU 1: whole step, CAST_FROZEN_WEIGHTS=never (its pair: every step casts them, as before)
#   GPU 2: the 1-process loop, compiled reduce-overhead, at the new defaults (fused AdamW, casts)
#   GPU 3: whole step with inductor's GEMM autotuning (Triton templates with fused epilogues
#          against cuBLAS), a long compile: 540 s
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
LOOP="python3 -m torch.distributed.run --standalone --nproc_per_node 1 bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 330 python3 $STEP --out $O/step_casts.json 2>&1 | log casts
 CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m pytest -q -rA -m gpu -p no:cacheprovider tests/test_train.py \
   tests/test_models_layers.py 2>&1 | log pytest
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 330 python3 $STEP --set drseg.models.layers.CAST_FROZEN_WEIGHTS=never \
   --out $O/step_no_casts.json 2>&1 | log nocasts
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 420 $LOOP --out $O/loop_fused_casts.json 2>&1 | log loop
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 540 python3 $STEP --set torch._inductor.config.max_autotune_gemm=true \
   --out $O/step_autotune_gemm.json 2>&1 | log autotune
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -e "STEP" -e "ddp x" -e "done at" -e "Error" -e "PASSED" -e "FAILED" -e "passed" -e "failed" $O/all.log
