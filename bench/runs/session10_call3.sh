#!/bin/bash
# Session 10, device call 3 (four H200s of one host, nvidia-h200-x4): inductor's reductions
# split wider (drseg.engine.inductor.SPLIT_WIDE_REDUCTIONS, on by default) against inductor's
# own splits, as same-call pairs of the compiled step and of the 1-process loop, both at the
# contiguous spatial tokens of call 2. Each job compiles into its own inductor cache folder
# (the pairs compile the same graphs).
# Outcome: the split was slower (step +0.17 ms GPU, loop +0.2 ms/it) and drseg.engine.inductor
# was removed after this call (commit 'engine: remove inductor_heuristics'); the script is kept
# as the record of the call and runs only on the commit before that removal (not at HEAD: the
# --set it passes names the removed module).
#   bash bench/runs/session10_call3.sh $OUT
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
STEP="bench/engine_breakdown.py --no-eager --no-components --compile --compile-mode reduce-overhead --top 60"
R="python3 -m torch.distributed.run --standalone --nproc_per_node 1"
D="bench/ddp_bench.py --iterations 60 --log-every 10 --compile --compile-mode reduce-overhead"
OFF="--set drseg.engine.inductor.SPLIT_WIDE_REDUCTIONS=false"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
job() {  # job GPU NAME TIMEOUT COMMAND...
  local g=$1 name=$2 t=$3; shift 3
  (CUDA_VISIBLE_DEVICES=$g TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_$name timeout $t "$@" 2>&1 | log $name
   echo "GPU $g done at ${SECONDS}s" | log main) &
}
job 0 step_split 420 python3 $STEP --out $O/step_split.json
job 1 step_nosplit 420 python3 $STEP $OFF --out $O/step_nosplit.json
job 2 loop_split 540 $R $D --out $O/ddp_c1_split.json
job 3 loop_nosplit 540 $R $D $OFF --out $O/ddp_c1_nosplit.json
wait
grep -a -e "STEP" -e "done at" -e "Error" -e "ddp x" $O/all.log | grep -v "it/s\]" | tail -30
