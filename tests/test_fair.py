"""The fair comparison's decision rules: best learning rate, ratio interval, verdicts."""

from pathlib import Path

import numpy as np
import pytest

from pclandscape.experiments.fair import (Config, _cell, at_stability_edge, below_edge, best_lr, cell_verdict,
                                          edge_summary, equal_lr_ratios, largest_stable_lr, overall_verdict,
                                          ratio_interval, recompute_cells)


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


def test_stability_edge_and_the_learning_rate_below_it():
    ok, one = [False, False], [False, True]
    assert at_stability_edge([ok, ok, one], 1) and not at_stability_edge([ok, ok, one], 0)
    assert not at_stability_edge([ok, ok], 1) and not at_stability_edge([ok, one], None)  # top of the grid; no best
    lrs = (0.01, 0.1, 1.0)
    # the best below the edge may be index 0 (not mistaken for "none")
    assert below_edge(lrs, [[5, 5], [None, None], [3, 3]], [ok] * 3, 2, budget=100) == 0
    assert below_edge(lrs, [[None] * 2, [None] * 2, [3, 3]], [ok] * 3, 2, budget=100) == 1  # none escapes below: next one down
    assert below_edge(lrs, [[3, 3]] * 3, [ok] * 3, 0, budget=100) is None


def test_edge_check_recomputes_the_cell_below_each_rules_stability_edge():
    cfg = Config(seeds=(0, 1, 2), lrs=(0.01, 0.1, 1.0, 10.0), max_steps=1000, n_boot=500)
    ok, never = [False] * 3, [None] * 3
    # both rules' best lr is 1.0, the last before a diverging one: PC is faster there, but with
    # PC one grid value down (0.1) BP is faster, and with both down BP is faster too
    bp = ([never, [40, 42, 44], [16, 17, 18], never], [ok, ok, ok, [True] * 3])
    pc = ([never, [45, 46, 47], [10, 11, 12], [5, 5, 5]], [ok, ok, ok, [False, True, False]])
    row = _cell(cfg, "linear", 2, {"bp": bp, "pc": pc})
    assert row["bp_best_lr"] == row["pc_best_lr"] == 1.0 and row["bp_at_edge"] and row["pc_at_edge"]
    assert row["verdict"] == "PC faster" and row["ratio"] == pytest.approx(17 / 11)
    alts = {(a["bp_lr"], a["pc_lr"]): a for a in row["edge_alternatives"]}
    assert {k: a["verdict"] for k, a in alts.items()} == {
        (0.1, 1.0): "PC faster", (1.0, 0.1): "BP faster", (0.1, 0.1): "BP faster"}
    assert alts[(1.0, 0.1)]["ratio"] == pytest.approx(17 / 46) and alts[(0.1, 0.1)]["ratio"] == pytest.approx(42 / 46)
    assert row["edge_sensitive"] and row["margin_verdict"] == "BP faster"
    robust, margin, lines = edge_summary([row])
    assert not robust and margin == "NOT SUPPORTED" and lines[0].startswith("linear H=2 (PC faster): BP and PC at the edge")
    # a stored run recomputes to the same cell; one decided by other rules is refused
    stored = {"config": {"seeds": [0, 1, 2], "lrs": list(cfg.lrs), "max_steps": 1000, "n_boot": 500},
              "series": {"table": [row]}}
    assert recompute_cells(stored)[0]["edge_alternatives"] == row["edge_alternatives"]
    with pytest.raises(ValueError, match="differs from its recomputation in \\['verdict'\\]"):
        recompute_cells({**stored, "series": {"table": [dict(row, verdict="BP faster")]}})
    # one more stable grid value above each best: no edge, nothing recomputed
    bp2 = (bp[0][:3] + [[30, 30, 30]] + [never], bp[1][:3] + [ok, [True] * 3])
    pc2 = (pc[0][:3] + [[20, 20, 20]] + [never], pc[1][:3] + [ok, [True] * 3])
    cfg2 = Config(seeds=(0, 1, 2), lrs=(0.01, 0.1, 1.0, 3.0, 10.0), max_steps=1000, n_boot=500)
    row = _cell(cfg2, "linear", 2, {"bp": bp2, "pc": pc2})
    assert not row["bp_at_edge"] and not row["pc_at_edge"] and row["edge_alternatives"] == []
    assert not row["edge_sensitive"] and row["margin_verdict"] == row["verdict"] == "PC faster"


def test_equal_learning_rate_ratios_and_the_largest_stable_lr():
    ok, never = [False] * 3, [None] * 3
    row = {"lrs": [0.01, 0.1, 1.0, 10.0],
           "bp_escapes": [never, [40, 44, 42], [16, 17, 18], never], "bp_diverged": [ok, ok, ok, [True] * 3],
           "pc_escapes": [[90, 100, 95], [20, 21, 23], [None, 5, 5], never], "pc_diverged": [ok, ok, ok, [False, True, False]]}
    # 0.01: BP never escapes; 1.0: a PC seed never escapes; 10: both diverge -> only lr 0.1 compares
    assert equal_lr_ratios(row) == [(0.1, pytest.approx(42 / 21))]
    assert largest_stable_lr(row, "bp") == largest_stable_lr(row, "pc") == 1.0
    assert largest_stable_lr(dict(row, bp_diverged=[[True] * 3] * 4), "bp") is None


def test_an_interrupted_fair_run_resumes_from_its_finished_grids(tmp_path, monkeypatch):
    """Inside a resume folder every finished (activation, depth, rule) grid is kept; a run of
    the same config started again reads them instead of training (train_many made to fail)
    and decides every cell as the first run did, diverged members included."""
    import pclandscape as pcl
    from pclandscape.experiments import base, fair

    cfg = Config(dataset="mnist1d", activations=("linear",), depths=(1,), width=8, seeds=(0, 1),
                 lrs=(1e-3, 0.1, 31.6), max_steps=40, n_boot=100)
    with base.resume_dir(tmp_path / "resume"):
        first = fair.run(cfg)
    kept = sorted(p.name for p in (tmp_path / "resume").iterdir())
    assert len(kept) == 2 * 3 * 2 and {k.split(".")[0] for k in kept} == {"linear_H1_bp", "linear_H1_pc"}
    assert any(any(d) for d in first.series["table"][0]["pc_diverged"])  # lr 31.6 diverges: meta must survive

    def fail(*a, **k):
        raise AssertionError("a finished grid was trained again")

    monkeypatch.setattr(pcl, "train_many", fail)
    with base.resume_dir(tmp_path / "resume"):
        again = fair.run(cfg)
    assert again.series["table"] == first.series["table"]
    assert again.series["max_inference_residual"] == first.series["max_inference_residual"]
    # the float64 residuals of the final equilibria survive in the kept histories (ExactLinear: rounding only)
    assert again.series["final_residual_float64"] == first.series["final_residual_float64"]
    assert 0 < first.series["final_residual_float64"]["linear_H1"] < 1e-6


def test_a_fair_grid_interrupted_mid_way_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """An interrupt inside a grid (here right after PC's grid wrote its checkpoint, before its
    histories were kept) leaves the checkpoint in the resume folder; the rerun resumes from it
    without a step more, decides every cell as an uninterrupted run does, and deletes it."""
    from pclandscape.experiments import base, fair
    from pclandscape.training import _loop

    cfg = Config(dataset="mnist1d", activations=("linear",), depths=(1,), width=8, seeds=(0, 1),
                 lrs=(1e-3, 0.1, 31.6), max_steps=40, n_boot=100)
    clean = fair.run(cfg)
    real = _loop._save_many

    def interrupted(path, *args):
        real(path, *args)
        if Path(path).name == "linear_H1_pc.ckpt":
            raise KeyboardInterrupt

    monkeypatch.setattr(_loop, "_save_many", interrupted)
    folder = tmp_path / "resume"
    with base.resume_dir(folder), pytest.raises(KeyboardInterrupt):
        fair.run(cfg)
    assert (folder / "linear_H1_pc.ckpt").is_file() and not list(folder.glob("linear_H1_pc.*.npz"))
    monkeypatch.setattr(_loop, "_save_many", real)
    steps, run_steps = [], _loop.run_steps_many
    monkeypatch.setattr(_loop, "run_steps_many", lambda *a, **k: steps.append(1) or run_steps(*a, **k))
    with base.resume_dir(folder):
        again = fair.run(cfg)
    assert steps == []
    assert again.series["table"] == clean.series["table"]
    assert not list(folder.glob("*.ckpt"))


def test_the_equilibrium_finding_needs_the_float64_residual_too():
    """The finding passes only when the float32 residual of every step and the float64 residual of
    every run's final equilibrium are both within tol; a float64 one above it (float32 rounding hid
    it), or one not measured, fails it."""
    from pclandscape.experiments.base import Results
    from pclandscape.experiments.fair import _claims

    cfg = Config(seeds=(0, 1, 2), lrs=(0.01, 0.1, 1.0), max_steps=1000, n_boot=200)
    ok, never = [False] * 3, [None] * 3
    outcome = ([never, [40, 42, 44], [16, 17, 18]], [ok, ok, ok])
    row = _cell(cfg, "tanh", 2, {"bp": outcome, "pc": outcome})

    def finding(residual64):
        res = Results("fair", cfg)
        _claims(cfg, res, [row], [row["verdict"]], {"tanh_H2": 9.9e-6}, residual64)
        return next(c for c in res.claims if c.id == "fair.equilibrium")

    assert finding({"tanh_H2": 8e-6}).passed and "float64 at the end: tanh_H2: 8.0000e-06" in finding({"tanh_H2": 8e-6}).measured
    assert not finding({"tanh_H2": 1.4e-5}).passed
    assert not finding({"tanh_H2": float("nan")}).passed and not finding({}).passed
    assert "tanh_H2: not measured" in finding({}).measured and "tanh_H2: not measured" in finding({"tanh_H2": np.nan}).measured
