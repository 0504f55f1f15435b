#!/bin/bash
# Session 7, device call B (two H200s of one host; timeouts add up to <= 525 s, plus the
# ~10 s pip prefix):
#   bash bench/runs/next_call_b.sh $OUT
# phase A (<= 375 s): the 2-process training loop, compiled reduce-overhead with CUDA graphs
#   kept under DDP (~249 s alone in session 6's call 1, so 1.5x). ddp_bench compares the
#   replicas' weights at the end (must be 0).
# phase B (<= 150 s): the same loop eager (no compile, no CUDA graphs), same seed and data: the
#   reference its loss curve must follow (bf16 roundings differ, so within a tolerance), since
#   equal replicas alone would not catch an all-reduce that both ranks got equally wrong.
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone --nproc_per_node 2"
D="bench/ddp_bench.py --iterations 60 --log-every 10"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
timeout 375 $R $D --compile --compile-mode reduce-overhead --ddp-cuda-graphs \
  --out $O/ddp_c2_ro.json 2>&1 | log c2ro
echo "phase A done at ${SECONDS}s" | log main
timeout 150 $R $D --out $O/ddp_e2.json 2>&1 | log e2
python3 - $O <<'PY' 2>&1 | log compare
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/{n}.json")) for n in ("ddp_c2_ro", "ddp_e2"))
la, lb = dict(map(tuple, a["losses"])), dict(map(tuple, b["losses"]))
its = sorted(set(la) & set(lb))
rel = max(abs(la[i] - lb[i]) / abs(lb[i]) for i in its)
print(f"loss curves over {len(its)} iterations: max relative difference {rel:.3%}; final "
      f"{a['final_loss']:.4f} (CUDA graphs) vs {b['final_loss']:.4f} (eager); replica difference "
      f"{a['weights_max_abs_diff_between_ranks']:.2e}")
PY
grep -e "ddp x" -e "phase" -e "Error" -e "loss curves" $O/all.log
