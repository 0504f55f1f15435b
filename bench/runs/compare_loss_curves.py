"""Compare two ddp_bench.py JSONs of the same loop (same processes, seed and data): the loss
curves' largest relative difference over their common logged iterations, the final losses,
and the first run's replica difference. Usage: compare_loss_curves.py RUN.json REFERENCE.json
"""
import json
import sys
from pathlib import Path

a_path, b_path = sys.argv[1:3]
missing = [p for p in (a_path, b_path) if not Path(p).is_file()]
if missing:
    sys.exit(f"compare_loss_curves: missing {', '.join(missing)} (that run did not finish)")
a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
if (a["processes"], a["global_batch"]) != (b["processes"], b["global_batch"]):
    sys.exit(f"compare_loss_curves: {a_path} ran {a['processes']} processes / batch "
             f"{a['global_batch']}, {b_path} {b['processes']} / {b['global_batch']}: not the same loop")
la, lb = dict(map(tuple, a["losses"])), dict(map(tuple, b["losses"]))
its = sorted(set(la) & set(lb))
if not its:
    sys.exit("compare_loss_curves: no logged iteration in common")
rel = {i: abs(la[i] - lb[i]) / abs(lb[i]) for i in its}
worst = max(rel, key=rel.get)
print(f"loss curves over {len(its)} logged iterations ({its[0]}-{its[-1]}): max relative "
      f"difference {rel[worst]:.3%} (iteration {worst}); final {a['final_loss']:.4f} vs "
      f"{b['final_loss']:.4f} (reference); replica difference "
      f"{a['weights_max_abs_diff_between_ranks']:.2e}, reference's "
      f"{b['weights_max_abs_diff_between_ranks']:.2e}")
