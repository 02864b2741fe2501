"""The fair comparison's edge check on stored runs: python reference/fair_edge_check.py RESULTS.json ...

Recomputes every cell of a stored ``fair`` run from its stored escape steps and divergences
(``pclandscape.experiments.fair.recompute_cells``; it refuses a run whose stored verdicts the
current rules do not reproduce) and prints each cell's edge check, the overall verdict with
every edge moved one grid value down, and the two rules at equal learning rates. Runs made before the check was added (reference/tanh/fair)
are reanalysed this way without rerunning them.
"""

import json
import sys

from pclandscape.experiments import fair


def main(paths):
    for path in paths:
        results = json.load(open(path))
        rows = fair.recompute_cells(results)
        robust, margin, lines = fair.edge_summary(rows)
        print(f"{path}: verdict {fair.overall_verdict([r['verdict'] for r in rows])}; edge check "
              f"{'YES (robust)' if robust else 'NO (edge-sensitive)'}; with every edge moved down: {margin}")
        for r in rows:
            print(f"  {r['activation']} H={r['hidden_layers']}: {r['verdict']}; {fair.edge_cell(r)}")
        for line in lines:
            print(f"    {line}")
        print("  at equal learning rates (BP/PC median escape steps where both rules are stable and escape):")
        for r in rows:
            print(f"    {r['activation']} H={r['hidden_layers']}: largest stable lr BP {fair.largest_stable_lr(r, 'bp')}, "
                  f"PC {fair.largest_stable_lr(r, 'pc')}; " + ", ".join(f"{lr:g}: {q:.2f}" for lr, q in fair.equal_lr_ratios(r)))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
