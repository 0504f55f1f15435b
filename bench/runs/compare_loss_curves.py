"""Compare two ddp_bench.py JSONs of the same loop (same processes, seed and data): the loss
curves' largest relative difference over their common logged iterations, the final losses,
and the first run's replica difference. Usage: compare_loss_curves.py RUN.json REFERENCE.json
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddp_bench import loss_curve_difference  # noqa: E402

a_path, b_path = sys.argv[1:3]
missing = [p for p in (a_path, b_path) if not Path(p).is_file()]
if missing:
    sys.exit(f"compare_loss_curves: missing {', '.join(missing)} (that run did not finish)")
a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
if (a["processes"], a["global_batch"]) != (b["processes"], b["global_batch"]):
    sys.exit(f"compare_loss_curves: {a_path} ran {a['processes']} processes / batch "
             f"{a['global_batch']}, {b_path} {b['processes']} / {b['global_batch']}: not the same loop")
try:
    rel, worst, n = loss_curve_difference(a, b)
except ValueError as err:
    sys.exit(f"compare_loss_curves: {err}")
print(f"loss curves over {n} logged iterations: max relative difference {rel:.3%} (iteration "
      f"{worst}); final {a['final_loss']:.4f} vs {b['final_loss']:.4f} (reference); replica "
      f"difference {a['weights_max_abs_diff_between_ranks']:.2e}, reference's "
      f"{b['weights_max_abs_diff_between_ranks']:.2e}")
