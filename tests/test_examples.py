"""The scripts in examples/ run, at small sizes, and print what they promise."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def _run(name, *args):
    out = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_saddle_at_origin_matches_theorem_3():
    out = _run("saddle_at_origin.py", "--hidden", "2", "--width", "3")
    assert re.search(r"loss L: non_strict_saddle \(order 3\)", out)
    numeric = float(re.search(r"equilibrated energy F\*: strict_saddle \(order 2\), lambda_min = (-?[\d.]+)", out).group(1))
    theory = float(re.search(r"closed form \(Eq 8 / Thm 3\): (-?[\d.]+)", out).group(1))
    assert numeric < 0 and abs(numeric - theory) <= 1e-6


def test_train_pc_vs_bp_reduces_both_losses():
    out = _run("train_pc_vs_bp.py", "--steps", "30", "--width", "16", "--data", "toy")
    for rule in ("bp", "pc"):
        a, b = map(float, re.search(rf"{rule}: train loss ([\d.]+) -> ([\d.]+)", out).groups())
        assert b < 0.2 * a
    assert float(re.search(r"worst inference residual ([\d.e+-]+)", out).group(1)) <= 1e-4


def test_the_example_sweep_spec_is_valid_and_has_the_cells_it_says(tmp_path, capsys):
    """examples/sweeps/fig12_lr.toml says 3 learning rates x 2 protocols x 5 seeds = 30 cells."""
    from pclandscape import cli

    spec = EXAMPLES / "sweeps" / "fig12_lr.toml"
    assert cli.main(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "30 cells"
    assert not (tmp_path / "o").exists()
