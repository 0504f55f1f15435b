#!/bin/bash
# Session 6, device call 1 (two H200s of one host; timeouts add up to <= 570 s):
#   bash bench/runs/session6_call1.sh $OUT
# phase A (<= 280 s), at once:
#   GPU 0: which SDPA kernel each aggregator Swin block gets (eager / compiled), then the
#          aggregator and the frozen prior compiled alone with their 60 costliest kernels
#   GPU 1: compiled evaluation, noslide, 1024 images (owed since session 5's attention change)
# phase B (the rest): 2-process DDP, compiled reduce-overhead with CUDA graphs kept under DDP;
#   if that fails early, 2-process DDP compiled default with optimize_ddp off.
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=8
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
nvidia-smi topo -m 2>&1 | log topo
(CUDA_VISIBLE_DEVICES=0 timeout 100 python3 bench/sdpa_probe.py --out $O/sdpa_probe.json 2>&1 | log sdpa
 CUDA_VISIBLE_DEVICES=0 timeout 170 python3 bench/engine_breakdown.py --no-eager --compile-components \
   --only aggregator,prior_frozen --top 60 --out $O/components_top60.json 2>&1 | log comp) &
(CUDA_VISIBLE_DEVICES=1 timeout 280 python3 bench/engine_bench.py --sections eval_compile --eval-images 1024 \
   --budget-s 260 --out $O/eval_compiled.json 2>&1 | log eval) &
wait
export TORCHINDUCTOR_COMPILE_THREADS=16
timeout 265 $R --nproc_per_node 2 $D --compile-mode reduce-overhead --ddp-cuda-graphs \
  --out $O/ddp_c2_ro.json 2>&1 | log c2ro
rc=${PIPESTATUS[0]}
echo "phase B rc=$rc at ${SECONDS}s" | log main
if [ "$rc" != 0 ] && [ $SECONDS -lt 380 ]; then
  timeout $((570 - SECONDS)) $R --nproc_per_node 2 $D --no-optimize-ddp --out $O/ddp_c2_noopt.json 2>&1 | log c2no
fi
grep -e "ddp x" -e "images/s" -e "shift" -e "wall" -e "Error" $O/all.log | tail -40
