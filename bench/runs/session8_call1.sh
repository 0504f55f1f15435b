#!/bin/bash
# Session 8, device call 1 (written after session 7 as next_call.sh), four H200s of one host
# (nvidia-h200-x4; on two GPUs run GPUs 0-1 first, then 2-3). Every GPU runs its own sequence at
# once, the longest <= 540 s, plus the ~10 s pip prefix:
#   bash bench/runs/session8_call1.sh $OUT   (the foreach run now needs --no-fused-optimizer: the
#   fused AdamW became the default after this call)
#   GPU 0: the 1-process loop, compiled reduce-overhead, foreach AdamW (the default)
#   GPU 1: the same loop with the fused AdamW (train.fused_optimizer): the bench's step has
#          always used the fused kernel, the loop not; the loop ran 1.0-1.2 ms per iteration
#          above the bench's pipelined step (session 7)
#   GPU 2: the whole step with inductor's coordinate-descent tuning (440 s cold did not suffice)
#   GPU 3: the whole step at the defaults (its pair), then the GPU-only tests of the training
#          loop (the side-stream prefetch test written after session 7's device time was spent)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
LOOP="python3 -m torch.distributed.run --standalone --nproc_per_node 1 bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 420 $LOOP --no-fused-optimizer --out $O/loop_foreach.json 2>&1 | log foreach
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 420 $LOOP --fused-optimizer --out $O/loop_fused.json 2>&1 | log fused
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 540 python3 $STEP --set torch._inductor.config.coordinate_descent_tuning=true \
   --out $O/step_cd_tuning.json 2>&1 | log stepcd
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 330 python3 $STEP --out $O/step_default.json 2>&1 | log step
 CUDA_VISIBLE_DEVICES=3 timeout 120 python3 -m pytest -q -rA -m gpu -p no:cacheprovider tests/test_train.py 2>&1 | log pytest
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -e "STEP" -e "ddp x" -e "done at" -e "Error" -e "PASSED" -e "FAILED" -e "passed" $O/all.log
