#!/bin/bash
# Session 7, device call B (two H200s of one host; timeouts add up to <= 580 s):
#   bash bench/runs/next_call_b.sh $OUT
# phase A (<= 330 s): the 2-process training loop, compiled reduce-overhead with CUDA graphs
#   kept under DDP; ddp_bench compares the replicas' weights at the end (must be 0). Session 6's
#   call 1 ran this in ~249 s alone on the host.
# phase B (<= 250 s): the 1-process loop, the same settings (the scaling baseline), GPU 0
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
timeout 330 $R --nproc_per_node 2 $D --ddp-cuda-graphs --out $O/ddp_c2_ro.json 2>&1 | log c2ro
echo "phase A done at ${SECONDS}s" | log main
CUDA_VISIBLE_DEVICES=0 timeout 250 $R --nproc_per_node 1 $D --out $O/ddp_c1_ro.json 2>&1 | log c1ro
grep -e "ddp x" -e "phase" -e "Error" $O/all.log
