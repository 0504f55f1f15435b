#!/bin/bash
# Session 7, device call 2 (four H200s of one host, nvidia-h200-x4; timeouts add up to
# <= 560 s, plus the ~10 s pip prefix):
#   bash bench/runs/session7_call2.sh $OUT
# phase A (<= 420 s): the 4-process training loop, compiled reduce-overhead with CUDA graphs
#   kept under DDP (the 2-process loop took ~249 s alone in session 6's call 1: 2 ranks
#   compiling at once with 16 threads each on 32 cores; here 4 x 16 on 64, so 1.7x). ddp_bench
#   compares the replicas' weights at the end (must be 0).
# phase B (<= 140 s): the same 4-process loop eager (no compile, no CUDA graphs), same seed and
#   data: the reference its loss curve must follow within bf16 noise, since equal replicas
#   alone would not catch an all-reduce that every rank got equally wrong. Also the eager
#   4-process throughput.
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone --nproc_per_node 4"
D="bench/ddp_bench.py --iterations 60 --log-every 10"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
nvidia-smi topo -m 2>&1 | log topo
timeout 420 $R $D --compile --compile-mode reduce-overhead --ddp-cuda-graphs \
  --out $O/ddp_c4_ro.json 2>&1 | log c4ro
echo "phase A done at ${SECONDS}s" | log main
timeout 140 $R $D --out $O/ddp_e4.json 2>&1 | log e4
echo "phase B done at ${SECONDS}s" | log main
python3 bench/runs/compare_loss_curves.py $O/ddp_c4_ro.json $O/ddp_e4.json 2>&1 | log compare
grep -e "ddp x" -e "phase" -e "Error" -e "loss curves" $O/all.log
