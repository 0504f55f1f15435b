#!/bin/bash
# Session 7, device call 4 (four H200s of one host, nvidia-h200-x4; every GPU sequence at once,
# the longest <= 440 s, plus the ~10 s pip prefix):
#   bash bench/runs/session7_call4.sh $OUT
#   GPU 0:    the whole step, compiled reduce-overhead, with inductor's coordinate-descent
#             tuning of its Triton kernels (compiles longer: 440 s against ~240 s measured
#             for the plain compile beside three others in call 1)
#   GPU 1:    the same step at the defaults: the same-call pair
#   GPUs 2+3: the eager loop with 2 processes, then with 1 process on GPU 2: eager scaling in
#             one call (sessions 4-5 saw 2 processes scale x1.4-1.5 where 4 scaled x3.5-4.0)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead"
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 440 python3 $STEP --set torch._inductor.config.coordinate_descent_tuning=true \
   --out $O/step_cd_tuning.json 2>&1 | log stepcd
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 330 python3 $STEP --out $O/step_default.json 2>&1 | log step
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2,3 timeout 140 $R --nproc_per_node 2 $D --out $O/ddp_e2.json 2>&1 | log e2
 CUDA_VISIBLE_DEVICES=2 timeout 120 $R --nproc_per_node 1 $D --out $O/ddp_e1.json 2>&1 | log e1
 python3 bench/ddp_bench.py --summarize $O/ddp_e1.json $O/ddp_e2.json --out $O/ddp_eager_scaling.json 2>&1 | log summary
 echo "GPUs 2+3 done at ${SECONDS}s" | log main) &
wait
grep -e "STEP" -e "ddp x" -e "done at" -e "Error" -e "scaling" $O/all.log
