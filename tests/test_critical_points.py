"""classify_critical_point on points whose nature the paper (or elementary maths) fixes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from pclandscape import theory


def _setup(rng, widths, n=10):
    x = jnp.asarray(rng.standard_normal((n, widths[0])))
    y = jnp.asarray(rng.standard_normal((n, widths[-1])))
    zeros = [jnp.zeros((o, i)) for i, o in zip(widths[:-1], widths[1:])]
    loss = lambda w: pcl.mse_loss(pcl.MLP.from_weights(w), x, y)
    energy = lambda w: theory.equilibrated_energy(w, x, y)
    return x, y, zeros, loss, energy


@pytest.mark.parametrize("n_hidden", [2, 3])
def test_origin_of_the_loss_is_a_non_strict_saddle_of_order_L(x64, n_hidden):
    rng = np.random.default_rng(n_hidden)
    widths = [3] + [3] * n_hidden + [2]
    _, _, zeros, loss, energy = _setup(rng, widths)
    cp = pcl.classify_critical_point(loss, zeros)
    assert cp.kind == "non_strict_saddle"
    assert cp.order == n_hidden + 1  # L = H + 1 weight matrices (footnote 1: order H saddle)
    assert cp.lambda_min == 0.0 and cp.n_zero == sum(a.size for a in zeros)
    assert cp.derivatives[-1] < 0 and all(abs(d) < 1e-12 for d in cp.derivatives[:-1])
    # the escape direction does descend
    t = 1e-2
    moved = [w + t * d for w, d in zip(zeros, cp.escape_direction)]
    assert float(loss(moved)) < float(loss(zeros))
    # ... while the origin of F* is a strict saddle (Theorem 2)
    cf = pcl.classify_critical_point(energy, zeros)
    assert cf.kind == "strict_saddle" and cf.order == 2 and cf.lambda_min < 0


def test_origin_of_the_loss_with_one_hidden_layer_is_strict(x64, rng):
    _, _, zeros, loss, _ = _setup(rng, [3, 4, 2])
    cp = pcl.classify_critical_point(loss, zeros)
    assert cp.kind == "strict_saddle" and cp.order == 2 and cp.n_negative > 0


def test_exact_global_minimum_and_a_random_point(x64, rng):
    w1 = jnp.asarray(rng.standard_normal((3, 3)))
    w2 = jnp.asarray(rng.standard_normal((2, 3)))
    x = jnp.asarray(rng.standard_normal((20, 3)))
    y = x @ (w2 @ w1).T  # realisable: the loss is exactly zero at (W1, W2)
    loss = lambda w: pcl.mse_loss(pcl.MLP.from_weights(w), x, y)
    cp = pcl.classify_critical_point(loss, [w1, w2])
    assert cp.kind == "minimum" and cp.lambda_min > -1e-10 and cp.n_zero >= 9  # GL(3) symmetry
    rand = [jnp.asarray(rng.standard_normal((3, 3))), jnp.asarray(rng.standard_normal((2, 3)))]
    cr = pcl.classify_critical_point(loss, rand)
    assert cr.kind == "not_critical" and cr.grad_norm > 1e-3


def test_zero_rank_saddle_of_F_star_is_strict(x64, rng):
    widths = [3, 4, 4, 3]
    x, y, _, _, energy = _setup(rng, widths)
    s = theory.zero_rank_saddle(widths, x, y, key=jax.random.key(3))
    cp = pcl.classify_critical_point(energy, s.weights)
    assert cp.kind == "strict_saddle" and cp.lambda_min <= float(s.curvature) / float(
        sum(jnp.sum(d**2) for d in s.direction)
    ) + 1e-10


def test_maximum_and_lanczos_path(x64):
    fn = lambda v: -jnp.sum(v**2) - 0.1 * jnp.sum(v**4)
    cp = pcl.classify_critical_point(fn, jnp.zeros(6))
    assert cp.kind == "maximum" and cp.lambda_max == pytest.approx(-2.0)
    # above dense_max the spectrum comes from Lanczos
    d = jnp.asarray(np.linspace(-1.0, 2.0, 50))
    quad = lambda v: 0.5 * jnp.sum(d * v**2)
    cp2 = pcl.classify_critical_point(quad, jnp.zeros(50), dense_max=10)
    assert cp2.kind == "strict_saddle" and cp2.lambda_min == pytest.approx(-1.0, rel=1e-10)
