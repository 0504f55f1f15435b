#!/bin/bash
# Record of call 2: FlexAttention was narrowed to the training step after the session's last
# call, so the evaluation of GPU 1 now runs SDPA.
# Session 9, device call 2 (four H200s of one host, nvidia-h200-x4; every sequence <= ~560 s,
# plus the ~10 s pip prefix):
#   bash bench/runs/session9_call2.sh $OUT
# New default: WINDOW_ATTENTION="flex" (FlexAttention in the compiled CUDA model; call 1: the
# whole step 44.39 -> 42.50 ms GPU). The real loop, DDP and the compiled evaluation with it.
#   GPU 0:    the 1-process loop at the defaults (flex), then the GPU tests
#   GPU 1:    the 1-process loop with WINDOW_ATTENTION=sdpa (the pair), then the compiled
#             evaluation at the defaults (flex in the evaluation's compiled model)
#   GPUs 2+3: the 2-process loop at the defaults (flex under DDP with CUDA graphs): replicas,
#             scaling against GPU 0
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 340 $R --nproc_per_node 1 $D --out $O/ddp_c1_flex.json 2>&1 | log c1flex
 CUDA_VISIBLE_DEVICES=0 timeout 180 python3 -m pytest -q -rA -m gpu -p no:cacheprovider \
   tests/test_models_split_guidance.py tests/test_train.py 2>&1 | log pytest
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 340 $R --nproc_per_node 1 $D --set drseg.models.aggregator.WINDOW_ATTENTION=sdpa \
   --out $O/ddp_c1_sdpa.json 2>&1 | log c1sdpa
 CUDA_VISIBLE_DEVICES=1 timeout 215 python3 bench/engine_bench.py --sections eval_compile --eval-images 1024 \
   --budget-s 200 --out $O/eval_compiled_flex.json 2>&1 | log eval
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2,3 timeout 360 $R --nproc_per_node 2 $D --out $O/ddp_c2_flex.json 2>&1 | log c2flex
 echo "GPUs 2+3 done at ${SECONDS}s" | log main) &
wait
python3 bench/ddp_bench.py --summarize $O/ddp_c1_flex.json $O/ddp_c2_flex.json --out $O/ddp_scaling.json 2>&1 | log summary
grep -e "ddp x" -e "done at" -e "Error" -e "PASSED" -e "FAILED" -e "passed" -e "failed" -e "scaling" -e "images/s" $O/all.log
