#!/bin/bash
# Session 7, device call 1 (four H200s of one host, nvidia-h200-x4; every GPU runs its own
# sequence at once, the longest <= 450 s, plus the ~10 s pip prefix):
#   bash bench/runs/session7_call1.sh $OUT
# One compile per GPU at a time; 4 compiles x 16 threads on 64 cores (the x2 machine ran
# 2 x 16 on 32 when a compiled reduce-overhead step bench took ~215 s, so 330 s is 1.5x).
#   GPU 0: the whole step, compiled reduce-overhead, defaults (session 6's contiguous window
#          bias, never timed on a GPU), then sdpa_probe (each Swin block's SDPA kernel)
#   GPU 1: the same step with the class step on the channels-last volume, then the
#          aggregator compiled alone the same way
#   GPU 2: the same step with the CLIP / prior attention off cuDNN, then the aggregator
#          compiled alone at the defaults
#   GPU 3: the 1-process training loop, compiled reduce-overhead: the baseline of the DDP
#          scaling ratio (never finished: cut at 270 s and 290 s in session 6, so 450 s)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
S="bench/engine_breakdown.py --no-eager"
STEP="$S --no-components --compile --compile-mode reduce-overhead"
AGG="$S --compile-components --only aggregator --top 40"
CL="--set drseg.models.aggregator.CHANNELS_LAST_VOLUME=cuda"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
nvidia-smi topo -m 2>&1 | log topo
(CUDA_VISIBLE_DEVICES=0 timeout 330 python3 $STEP --out $O/step_default.json 2>&1 | log step0
 CUDA_VISIBLE_DEVICES=0 timeout 100 python3 bench/sdpa_probe.py --out $O/sdpa_probe.json 2>&1 | log sdpa
 echo "GPU 0 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=1 timeout 330 python3 $STEP $CL --out $O/step_channels_last.json 2>&1 | log step1
 CUDA_VISIBLE_DEVICES=1 timeout 115 python3 $AGG $CL --out $O/agg_channels_last.json 2>&1 | log agg1
 echo "GPU 1 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=2 timeout 330 python3 $STEP --sdpa-no-cudnn --out $O/step_no_cudnn.json 2>&1 | log step2
 CUDA_VISIBLE_DEVICES=2 timeout 115 python3 $AGG --out $O/agg_default.json 2>&1 | log agg2
 echo "GPU 2 done at ${SECONDS}s" | log main) &
(CUDA_VISIBLE_DEVICES=3 timeout 450 python3 -m torch.distributed.run --standalone --nproc_per_node 1 \
   bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead \
   --out $O/ddp_c1_ro.json 2>&1 | log c1ro
 echo "GPU 3 done at ${SECONDS}s" | log main) &
wait
grep -e "STEP" -e "aggregator " -e "shift" -e "done at" -e "ddp x" -e "Error" $O/all.log
