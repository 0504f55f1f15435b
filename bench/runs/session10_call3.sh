#!/bin/bash
# Session 10, device call 3 (four H200s of one host, nvidia-h200-x4), at the new default
# (CONTIGUOUS_SPATIAL_TOKENS = "cuda"):
#   GPU 0: the 1-process loop at the defaults (call 2: 43.4 ms/it)
#   GPU 1: the same loop with inductor's max_autotune_pointwise (owed since session 9)
#   GPU 2: the compiled evaluation (session 10 call 1: 297.4 images/s before the change)
#   GPU 3: the GPU tests of the aggregator (the new contiguous-tokens test) and the layers
#   bash bench/runs/session10_call3.sh $OUT
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 520 $R $D --out $O/ddp_c1_default.json 2>&1 | log loop
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 520 $R $D --set torch._inductor.config.max_autotune_pointwise=true \
   --out $O/ddp_c1_autotune_pointwise.json 2>&1 | log pointwise
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 420 python3 bench/engine_bench.py --sections eval_compile --eval-images 1024 \
   --budget-s 400 --out $O/eval_compiled.json 2>&1 | log eval
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 400 python3 -m pytest -q -rA -m gpu -p no:cacheprovider \
   tests/test_models_split_guidance.py tests/test_models_layers.py 2>&1 | log pytest
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -a -e "done at" -e "Error" -e "ddp x" -e "PASSED" -e "FAILED" -e "passed" -e "failed" -e "images/s" $O/all.log | grep -v "it/s\]" | tail -30
