#!/bin/bash
# Session 9, device call 3 (four H200s of one host, nvidia-h200-x4; every sequence <= ~420 s,
# plus the ~10 s pip prefix):
#   bash bench/runs/session9_call3.sh $OUT
# The defaults of call 2 (FlexAttention in the compiled CUDA model) once more, and what was
# not measured at them:
#   GPU 0: the 1-process loop at the defaults (call 2: 44.1 ms/it): run-to-run spread
#   GPU 1: the same loop with train.tf32 and train.cudnn_benchmark off (the benches had always
#          run with them on; since this session the stages apply them too)
#   GPU 2: the whole step at the defaults (call 1: 42.50 ms GPU), the figure's session 9 row
#   GPU 3: the whole ViT-L/14 336 step at the defaults (session 5: 91.7 ms)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 400 $R $D --out $O/ddp_c1_flex.json 2>&1 | log c1flex
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 400 $R $D --no-tf32 --no-cudnn-benchmark --out $O/ddp_c1_no_tf32.json 2>&1 | log notf32
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 400 python3 $STEP --out $O/step_flex.json 2>&1 | log step
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 420 python3 $STEP --preset vitl14-336 --out $O/step_vitl.json 2>&1 | log vitl
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -e "STEP" -e "ddp x" -e "done at" -e "Error" $O/all.log
