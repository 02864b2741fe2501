"""The fair comparison's decision rules: best learning rate, ratio interval, verdicts."""

import numpy as np
import pytest

from pclandscape.experiments.fair import best_lr, cell_verdict, overall_verdict, ratio_interval


def test_best_lr_skips_diverged_and_takes_the_smallest_median():
    lrs = (1e-3, 1e-2, 1e-1, 1.0)
    escapes = [
        [None, None, None],  # never escapes: not a candidate
        [300, 280, 310],
        [40, 35, None],  # median 40, one censored seed
        [5, 6, 4],  # fastest, but a seed diverged there
    ]
    diverged = [[False] * 3, [False] * 3, [False] * 3, [False, True, False]]
    assert best_lr(lrs, escapes, diverged, budget=1000) == 2
    # without the divergence the fastest lr wins
    assert best_lr(lrs, escapes, [[False] * 3] * 4, budget=1000) == 3
    # ties on the median go to the smaller mean (censored runs at the budget)
    assert best_lr((1, 2), [[10, 20, 30], [20, 20, None]], [[False] * 3] * 2, budget=1000) == 0
    assert best_lr((1, 2), [[None] * 2, [None] * 2], [[False] * 2] * 2, budget=100) is None


def test_ratio_interval_is_the_paired_bootstrap_of_the_mean_ratio():
    t_bp = np.array([100.0, 120.0, 80.0, 110.0, 90.0])
    t_pc = np.array([50.0, 60.0, 40.0, 55.0, 45.0])  # exactly half, seed by seed
    est, lo, hi = ratio_interval(t_bp, t_pc, n_boot=2000)
    assert est == pytest.approx(2.0, rel=1e-12)
    assert lo == pytest.approx(2.0, rel=1e-12) and hi == pytest.approx(2.0, rel=1e-12)  # paired: no spread
    # an independent brute-force bootstrap with the same generator gives the same interval
    rng = np.random.default_rng(0)
    a, b = np.array([3.0, 9.0, 4.0, 7.0]), np.array([2.0, 2.0, 5.0, 1.0])
    idx = rng.integers(0, 4, size=(500, 4))
    ratios = [a[i].mean() / b[i].mean() for i in idx]
    est, lo, hi = ratio_interval(a, b, n_boot=500, seed=0)
    assert est == pytest.approx(a.mean() / b.mean())
    assert (lo, hi) == pytest.approx(tuple(np.percentile(ratios, [2.5, 97.5])))


def test_verdict_rules():
    assert cell_verdict(1.2, 3.0) == "PC faster"
    assert cell_verdict(0.2, 0.9) == "BP faster"
    assert cell_verdict(0.8, 1.3) == "unresolved"
    assert overall_verdict(["PC faster", "PC faster"]) == "SUPPORTED"
    assert overall_verdict(["PC faster", "BP faster"]) == "NOT SUPPORTED"
    assert overall_verdict(["PC faster", "unresolved"]) == "INCONCLUSIVE"
    assert overall_verdict([]) == "INCONCLUSIVE"


def test_report_shows_tables_and_the_verdict_without_counting_it_as_a_failure(tmp_path):
    from pclandscape.experiments import report as rep

    claim = {"id": "fair.pc_faster", "statement": "s", "expected": "e", "measured": "m", "passed": False,
             "category": "paper", "verdict": "NOT SUPPORTED", "section": "fair"}
    table = {"title": "Fair comparison", "columns": ["activation", "H", "verdict"], "rows": [["linear", "2", "BP faster"]]}
    results = {"fair": {"claims": [claim], "tables": [table], "quick": True, "wall_time_s": 1.0, "figures": []}}
    md_path, html_path = rep.write_report(tmp_path, results)
    md, page = md_path.read_text(), html_path.read_text()
    assert "| activation | H | verdict |" in md and "| linear | 2 | BP faster |" in md
    assert "<td>BP faster</td>" in page and "NOT_SUPPORTED" in page
    assert "verdict fair.pc_faster: NOT SUPPORTED" in md
    row = rep.summary_rows(results)[0]
    assert row["all_paper_pass"] and row["paper_total"] == 0  # a worded verdict is a result, not a failure
