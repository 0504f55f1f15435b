#!/bin/bash
# Owed after session 10 (bench/notes/next_device_calls.md): the two targets on their own card,
# an H100 (nvidia-h100 or any H100 kind `status` lists; on a machine of two GPUs both jobs run
# at once, on one GPU one after the other: then give the call 600 s and drop the loop).
#   bash bench/runs/next_call.sh $OUT
#   GPU 0: the whole step (compiled reduce-overhead, the engine's defaults), then the loop
#   GPU 1: the compiled evaluation, noslide, 1024 images
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=8
N=$(nvidia-smi -L | wc -l)
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
LOOP="python3 -m torch.distributed.run --standalone --nproc_per_node 1 bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
EVAL="bench/engine_bench.py --sections eval_compile --eval-images 1024 --budget-s 310"
if [ "$N" -ge 2 ]; then
  (CUDA_VISIBLE_DEVICES=0 timeout 330 python3 $STEP --out $O/step_h100.json 2>&1 | log step
   CUDA_VISIBLE_DEVICES=0 timeout 240 $LOOP --out $O/loop_h100.json 2>&1 | log loop
   echo "GPU 0 done at ${SECONDS}s" | log main) &
  (CUDA_VISIBLE_DEVICES=1 timeout 330 python3 $EVAL --out $O/eval_h100.json 2>&1 | log eval
   echo "GPU 1 done at ${SECONDS}s" | log main) &
  wait
else
  timeout 300 python3 $STEP --out $O/step_h100.json 2>&1 | log step
  timeout 280 python3 $EVAL --budget-s 270 --out $O/eval_h100.json 2>&1 | log eval
fi
grep -e "STEP" -e "ddp x" -e "images/s" -e "done at" -e "Error" $O/all.log
