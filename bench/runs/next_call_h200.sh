#!/bin/bash
# Owed after session 9 when only H200s are lent (bench/notes/next_device_calls.md, items 2 and 4;
# four H200s of one host, nvidia-h200-x4; every sequence <= ~400 s, plus the ~10 s pip prefix):
#   bash bench/runs/next_call_h200.sh $OUT
#   GPU 0: the GPU tests of the window attention and the loop (the narrowed FlexAttention
#          condition has not run on a GPU), then the GPU tests of the layers
#   GPU 1: the 1-process loop at the defaults (session 9: 44.1 ms/it)
#   GPU 2: the same loop with inductor's max_autotune_pointwise (session 9, call 5: the step's
#          Triton reductions 6.28 -> 5.88 ms, the step within the spread)
#   GPU 3: the compiled evaluation at the defaults (SDPA; session 6: 295.5 images/s)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m pytest -q -rA -m gpu -p no:cacheprovider \
   tests/test_models_split_guidance.py tests/test_train.py 2>&1 | log pytest
 CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m pytest -q -rA -m gpu -p no:cacheprovider \
   tests/test_models_layers.py 2>&1 | log pytest_layers
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 400 $R $D --out $O/ddp_c1_default.json 2>&1 | log c1
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 400 $R $D --set torch._inductor.config.max_autotune_pointwise=true \
   --out $O/ddp_c1_autotune_pointwise.json 2>&1 | log pointwise
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 330 python3 bench/engine_bench.py --sections eval_compile --eval-images 1024 \
   --budget-s 310 --out $O/eval_compiled.json 2>&1 | log eval
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -e "ddp x" -e "done at" -e "Error" -e "PASSED" -e "FAILED" -e "passed" -e "failed" -e "images/s" $O/all.log
