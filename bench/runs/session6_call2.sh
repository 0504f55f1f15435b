#!/bin/bash
# Session 6, device call 2 (two H200s; timeouts add up to <= 560 s):
#   bash bench/runs/session6_call2.sh $OUT
# phase A (<= 270 s), at once:
#   GPU 0: sdpa_probe (fixed), then the aggregator compiled alone with its 60 costliest kernels
#   GPU 1: 1-process training loop, compiled reduce-overhead (the DDP scaling baseline)
# phase B (<= 285 s), at once:
#   GPU 0: the whole step, compiled reduce-overhead (with the prior's fixed-grid RoPE)
#   GPU 1: the prior compiled alone (30 kernels), then the text tower cut / not cut
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=8
R="python3 -m torch.distributed.run --standalone"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
(CUDA_VISIBLE_DEVICES=0 timeout 85 python3 bench/sdpa_probe.py --out $O/sdpa_probe.json 2>&1 | log sdpa
 CUDA_VISIBLE_DEVICES=0 timeout 180 python3 bench/engine_breakdown.py --no-eager --compile-components \
   --only aggregator --top 60 --out $O/aggregator_top60.json 2>&1 | log agg) &
(CUDA_VISIBLE_DEVICES=1 timeout 270 $R --nproc_per_node 1 bench/ddp_bench.py --iterations 60 --log-every 10 \
   --compile --compile-mode reduce-overhead --out $O/ddp_c1_ro.json 2>&1 | log c1ro) &
wait
echo "phase A done at ${SECONDS}s" | log main
(CUDA_VISIBLE_DEVICES=0 timeout 285 python3 bench/engine_breakdown.py --no-components --no-eager --compile \
   --compile-mode reduce-overhead --out $O/step_ro.json 2>&1 | log step) &
(CUDA_VISIBLE_DEVICES=1 timeout 100 python3 bench/engine_breakdown.py --no-eager --compile-components \
   --only prior_frozen --top 30 --out $O/prior_top30.json 2>&1 | log prior
 for t in never always; do
   CUDA_VISIBLE_DEVICES=1 timeout 85 python3 bench/engine_breakdown.py --no-eager --only text_tower \
     --compile-components --set drseg.models.clip.TRUNCATE_TEXT=$t --out $O/text_$t.json 2>&1 | log text_$t
 done) &
wait
grep -e "ddp x" -e "shift" -e "wall" -e "Error" -e "STEP" -e "phase" $O/all.log | tail -40
