"""The Python examples of README.md and docs/ run as written, and give what their comments say.

Each file's ```python blocks run in order in one namespace (a reader's session), in a temporary
folder, with downloads off: the image examples use Fashion-MNIST where it is installed and
MNIST-1D (generated) otherwise. After a file has run, its checks compare what the comments
promise with an independent computation.
"""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _documents() -> list[Path]:
    docs = [p for p in sorted((ROOT / "docs").rglob("*.md")) if "quick" not in p.parts and p.name != "report.md"]
    return [p for p in [ROOT / "README.md", *docs] if _BLOCK.search(p.read_text())]


def _check_readme(ns):
    _check_first_block(ns)
    _check_landscape(ns)
    _check_deep(ns)


def _check_first_block(ns):
    # Theorem 1 against the direct block solve of the activities: two computations, one value
    assert abs(float(ns["F"]) - float(ns["F_theory"])) <= 1e-5 * abs(float(ns["F_theory"]))
    h = ns["history"]
    assert len(h.loss) == 300 and np.isfinite(h.loss).all()
    assert h.test_loss[-1] < 0.5 * h.test_loss[0]
    assert (Path.cwd() / "pc.json").is_file()


def _check_training(ns):
    _check_first_block(ns)
    histories = ns["histories"]
    assert len(histories) == 6 and (Path.cwd() / "grid.ckpt").is_file()
    for h in histories:                                       # a frozen member stops at its divergence
        stop = h.meta.get("diverged_at")
        assert np.isfinite(h.loss[: stop if stop is not None else None]).all()
    check = ns["check"]                                       # float32 rounding may hide ~tol (docs say so)
    assert float(check.reported) <= 1e-5 and bool(check.verified) == (float(check.residual) <= 1e-5)
    assert abs(float(check.residual) - float(check.reported)) <= 1e-5
    _check_deep(ns)


def _check_landscape(ns):
    H_F, H_0 = np.asarray(ns["H_F"]), np.asarray(ns["H_0"])
    assert H_F.dtype == np.float64 and H_F.shape == (27, 27)
    np.testing.assert_allclose(H_F, H_0, atol=1e-10)          # Eq 8, implicit Hessian vs closed form
    lam_min = np.linalg.eigvalsh(H_0)[0]
    assert lam_min < 0 and abs(float(ns["lam"][0]) - lam_min) <= 1e-8 * abs(lam_min)
    assert ns["cp_L"].kind == "non_strict_saddle"             # the loss's origin, H = 2 (Theorem 2)
    assert ns["cp_F"].kind == "strict_saddle"                 # F*'s origin (Theorem 3)
    assert ns["near"].converged                               # ... and it is the origin itself
    assert np.abs(np.concatenate([np.ravel(w) for w in ns["near"].params])).max() <= 1e-9
    assert ns["grid"].values.shape == (30, 30)
    H_L = np.asarray(ns["H_L"])
    np.testing.assert_allclose(H_L, H_L.T, atol=1e-12)


def _check_deep(ns):
    eq = ns["eq"]
    assert bool(eq.converged) and int(eq.steps) <= 4 and float(eq.grad_norm) <= 1e-5
    assert len(ns["deep"].weights) == 32


CHECKS = {"README.md": _check_readme, "training.md": _check_training, "landscape.md": _check_landscape}


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_examples_run_and_say_true(doc, tmp_path, monkeypatch):
    assert doc.name in CHECKS, f"{doc} has Python examples: add checks for them to tests/test_docs.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PCLANDSCAPE_DOWNLOAD", "0")
    ns = {"__name__": "__docs__"}
    for code in _BLOCK.findall(doc.read_text()):
        exec(compile(code, str(doc), "exec"), ns)
    assert not jax.config.jax_enable_x64                       # the x64 blocks leave float32 behind
    CHECKS[doc.name](ns)
    assert jnp.zeros(()).dtype == jnp.float32
