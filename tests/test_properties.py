"""Property tests (hypothesis): the theory's identities on random shapes, scales and seeds.

Each compares two quantities computed independently: a closed form against the exact
inference (a block-tridiagonal solve), or the Eq 8 Hessian against autodiff of F*.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pclandscape as pcl
from pclandscape._compat import enable_x64

_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def linear_problems(draw):
    n_hidden = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 4)) for _ in range(n_hidden + 2)]
    n = draw(st.integers(1, 6))
    scale = draw(st.floats(0.2, 2.0))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    ws = [scale * rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(widths[:-1], widths[1:])]
    return widths, ws, rng.standard_normal((n, widths[0])), rng.standard_normal((n, widths[-1]))


@_SETTINGS
@given(linear_problems())
def test_theorem_1_equals_exact_inference(problem):
    """F*(theta) of Theorem 1 (closed form with the rescaling S) == the energy at the exact
    equilibrium, for any linear network, batch and weight scale."""
    widths, ws, x, y = problem
    with enable_x64(True):
        net = pcl.MLP(jax.random.key(0), widths, "linear", dtype=jnp.float64).with_weights([jnp.asarray(w) for w in ws])
        x, y = jnp.asarray(x), jnp.asarray(y)
        eq = pcl.infer(net, x, y, pcl.ExactLinear(tol=1e-8, method="activity"))
        closed = pcl.theory.equilibrated_energy([jnp.asarray(w) for w in ws], x, y)
        assert bool(eq.converged)
        np.testing.assert_allclose(float(eq.energy), float(closed), rtol=1e-9, atol=1e-12)


@_SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(2, 6), st.integers(0, 2**16))
def test_eq8_equals_the_implicit_hessian_at_the_origin(n_hidden, width, n, seed):
    """The Hessian of F* at theta = 0 from Eq 8 == the implicit-function Hessian at an exact
    equilibrium (autodiff through the equilibrium conditions)."""
    rng = np.random.default_rng(seed)
    widths = [2] + [width] * n_hidden + [2]
    with enable_x64(True):
        x, y = jnp.asarray(rng.standard_normal((n, 2))), jnp.asarray(rng.standard_normal((n, 2)))
        net = pcl.MLP(jax.random.key(0), widths, "linear", init_std=0.0, dtype=jnp.float64)
        implicit = pcl.energy_hessian(net, x, y, pcl.Implicit())
        closed = pcl.theory.energy_hessian_at_origin(widths, x, y)
        np.testing.assert_allclose(np.asarray(implicit), np.asarray(closed), atol=1e-10)
