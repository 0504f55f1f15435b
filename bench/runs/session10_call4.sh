#!/bin/bash
# Session 10, device call 4 (four H200s of one host, nvidia-h200-x4), at the session's defaults
# (contiguous spatial tokens):
#   GPU 0: the GPU tests of split guidance (the new contiguous-tokens test), layers and train
#   GPU 1: the 1-process loop at the defaults (calls 2-3: 43.4, 42.7 ms/it)
#   GPU 2: the same loop with the class step on the channels-last volume
#          (CHANNELS_LAST_VOLUME=cuda): the spatial step now hands it (B, K, h, w, E) memory,
#          which it did not when session 7 measured the switch (+0.5 ms then)
#   GPU 3: the compiled evaluation (call 1: 297.4 images/s)
#   bash bench/runs/session10_call4.sh $OUT
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
job() {  # job GPU NAME TIMEOUT COMMAND...
  local g=$1 name=$2 t=$3; shift 3
  (CUDA_VISIBLE_DEVICES=$g TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_$name timeout $t "$@" 2>&1 | log $name
   echo "GPU $g done at ${SECONDS}s" | log main) &
}
job 0 pytest 400 python3 -m pytest -q -rA -m gpu -p no:cacheprovider tests/test_models_split_guidance.py \
  tests/test_models_layers.py tests/test_train.py
job 1 loop 480 $R $D --out $O/ddp_c1_default.json
job 2 loop_clv 480 $R $D --set drseg.models.aggregator.CHANNELS_LAST_VOLUME=cuda --out $O/ddp_c1_channels_last_volume.json
job 3 eval 420 python3 bench/engine_bench.py --sections eval_compile --eval-images 1024 --budget-s 400 \
  --out $O/eval_compiled.json
wait
grep -a -e "done at" -e "Error" -e "ddp x" -e "PASSED" -e "FAILED" -e "passed" -e "failed" -e "images/s" $O/all.log | grep -v "it/s\]" | tail -30
