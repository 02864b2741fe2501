"""Kinks of ReLU: one-sided derivatives, the min-norm subgradient residual, and Newton's
active-set solve to equilibria that sit on kinks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from pclandscape._subgradients import one_sided_derivatives
from pclandscape.kinks import KINKS, activities_on_kinks, kink_slopes, stationarity_residual
from pclandscape import sample_energies
from pclandscape._compat import enable_x64


def _relu_problem(h, *, bias=True, masked=True):
    key = jax.random.key(h)
    net = pcl.MLP(key, [4] + [6] * h + [3], "relu", use_bias=bias)
    if bias:
        bs = tuple(0.3 * jax.random.normal(jax.random.fold_in(key, 10 + i), b.shape) for i, b in enumerate(net.biases))
        net = pcl.MLP.from_weights(net.weights, "relu", biases=bs)
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, 4))
    y = jax.random.normal(jax.random.fold_in(key, 2), (5, 3))
    if masked:
        y = y.at[1, 2].set(jnp.nan)
    return net, x, y


def test_kinks_are_known_for_relu_mlps_only():
    assert kink_slopes(pcl.MLP(jax.random.key(0), [3, 4, 2], "relu")) == (0.0, 1.0)
    assert kink_slopes(pcl.MLP(jax.random.key(0), [3, 4, 2], "tanh")) is None
    assert kink_slopes(pcl.MLP(jax.random.key(0), [3, 4, 2], lambda v: jnp.maximum(v, 0.0))) is None
    assert kink_slopes(pcl.CNN(jax.random.key(0), "relu", channels=(2, 2, 2), hidden=4)) is None


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_residual_is_the_gradient_where_the_energy_is_smooth(x64, activation):
    net, x, y = _relu_problem(2)
    net = pcl.MLP.from_weights(net.weights, activation, biases=net.biases)
    z = tuple(jax.random.normal(jax.random.key(7 + i), (5, 6)) for i in range(2))  # no exact zeros
    r = stationarity_residual(net, z, x, y)
    g = pcl.activity_grad(net, z, x, y)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(r, g)) <= 1e-14
    assert int(activities_on_kinks(net, z)) == 0


def test_one_sided_derivatives_and_min_norm_subgradient_on_kinks(x64):
    """On a kink the energy is quadratic on each side, so Richardson extrapolation of one-sided
    difference quotients gives the one-sided derivatives exactly (up to rounding)."""
    net, x, y = _relu_problem(2)
    z = [jax.random.normal(jax.random.key(3 + i), (5, 6)) for i in range(2)]
    z[0] = z[0].at[:, :3].set(0.0)  # 15 activities of layer 1 and 10 of layer 2 on the kink
    z[1] = z[1].at[:, 4:].set(0.0)
    z = tuple(z)
    dm, dp, _ = one_sided_derivatives(net, z, x, y, KINKS["relu"])
    f = lambda zz: sample_energies(net, zz, x, y)  # noqa: E731
    f0, h = f(z), 1e-3
    for l, cols in ((0, range(3)), (1, range(4, 6))):
        for j in cols:
            def q(step):
                zz = list(z)
                zz[l] = zz[l].at[:, j].add(step)
                return (f(tuple(zz)) - f0) / step

            right = 2 * q(h) - q(2 * h)
            left = 2 * q(-h) - q(-2 * h)
            np.testing.assert_allclose(right, dp[l][:, j], atol=1e-9)
            np.testing.assert_allclose(left, dm[l][:, j], atol=1e-9)
    r = stationarity_residual(net, z, x, y)
    for a, m, p, rr in zip(z, dm, dp, r):
        on = np.asarray(a == 0)
        lo, hi = np.minimum(m, p), np.maximum(m, p)
        expect = np.where(lo > 0, lo, np.where(hi < 0, hi, 0.0))
        np.testing.assert_array_equal(np.asarray(rr)[on], expect[on])
    assert int(activities_on_kinks(net, z)) == 25


@pytest.mark.parametrize("linear_solve", ["block", "cg"])
def test_newton_reaches_equilibria_on_relu_kinks(x64, linear_solve):
    """Newton's active-set solve ends at a point where the min-norm subgradient vanishes
    although the plain gradient does not (activities pinned at the kink, where gradient
    flow only chatters), and that point is a local minimum of every F_i."""
    for h in (2, 5):
        net, x, y = _relu_problem(h)
        eq = pcl.infer(net, x, y, pcl.Newton(tol=1e-10, linear_solve=linear_solve))
        assert bool(eq.converged) and float(eq.grad_norm) <= 1e-10 and int(eq.steps) <= 15
        z = eq.activities
        assert int(activities_on_kinks(net, z)) > 0
        g = pcl.activity_grad(net, z, x, y)
        assert max(float(jnp.max(jnp.abs(a))) for a in g) > 1e-2  # not a zero of the gradient
        dm, dp, _ = one_sided_derivatives(net, z, x, y, KINKS["relu"])
        for a, m, p in zip(z, dm, dp):  # V-shaped along every pinned activity
            on = a == 0
            assert bool(jnp.all(jnp.where(on, m, 0.0) <= 1e-12)) and bool(jnp.all(jnp.where(on, p, 0.0) >= -1e-12))
        f0 = sample_energies(net, z, x, y)
        keys = jax.random.split(jax.random.key(100), len(z))
        for eps in (1e-3, 1e-6):  # no nearby point is lower: 200 random directions
            vs = tuple(eps * jax.random.normal(kk, (200,) + a.shape) for kk, a in zip(keys, z))
            f1 = jax.vmap(lambda v: sample_energies(net, tuple(a + b for a, b in zip(z, v)), x, y))(vs)
            assert bool(jnp.all(f1 >= f0 - 1e-13)), (h, eps, float(jnp.min(f1 - f0)))


@pytest.mark.parametrize("linear_solve", ["block", "cg"])
def test_newton_on_a_residual_mupc_relu_net_in_float32(linear_solve):
    """A residual muPC ReLU net (784-64x7-10, batch 16) where Newton used to stall at a residual
    of 3e-3 in float32: an activity on a kink whose Newton step on its piece pointed back across
    it was stopped there while the others moved on (not a descent direction). Holding such
    binding activities and solving again on the smaller face reaches 1e-5. The end point is
    checked apart from the solver: the autodiff gradient vanishes on every activity off a kink,
    and the energy rises both ways along every activity on one (finite differences, float64)."""
    x = jax.random.normal(jax.random.key(1), (16, 784))
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (16,), 0, 10), 10)
    net = pcl.MLP(jax.random.key(0), [784] + [64] * 7 + [10], "relu", residual=True, param=pcl.MuPC())
    eq = pcl.infer(net, x, y, pcl.Newton(tol=1e-5, linear_solve=linear_solve, max_steps=30))
    assert bool(eq.converged) and float(eq.grad_norm) <= 1e-5 and int(eq.steps) <= 12
    with enable_x64(True):
        to64 = lambda t: jax.tree_util.tree_map(  # noqa: E731
            lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, t)
        net64, z, x64_, y64 = to64(net), to64(tuple(eq.activities)), to64(x), to64(y)
        on = [a == 0 for a in z]
        assert sum(int(jnp.sum(o)) for o in on) > 20
        g = pcl.activity_grad(net64, z, x64_, y64)
        off = jnp.sqrt(sum(jnp.sum(jnp.where(o, 0.0, a) ** 2, axis=1) for a, o in zip(g, on)))
        assert float(jnp.max(off)) <= 1.2e-5
        f0 = np.asarray(sample_energies(net64, z, x64_, y64))
        h = 1e-4
        for l, o in enumerate(on):
            for i, j in zip(*np.nonzero(np.asarray(o))):
                for sign in (1.0, -1.0):
                    zz = tuple(a.at[i, j].add(sign * h) if k == l else a for k, a in enumerate(z))
                    slope = (float(sample_energies(net64, zz, x64_, y64)[i]) - f0[i]) / h
                    assert slope >= -1.2e-5, (l, i, j, sign, slope)


def test_euler_only_chatters_around_a_relu_kink_equilibrium(x64):
    net, x, y = _relu_problem(2, bias=False, masked=False)
    newton = pcl.infer(net, x, y, pcl.Newton(tol=1e-10))
    flow = pcl.infer(net, x, y, pcl.Euler(dt=0.1, steps=5000, tol=1e-10, stop_at_tol=True))
    assert int(flow.steps) == 5000 and float(flow.grad_norm) > 1e-3  # never lands on the kink
    assert float(flow.energy) == pytest.approx(float(newton.energy), rel=1e-2)  # ... though close to it
    assert float(newton.energy) <= float(flow.energy)


def test_implicit_hessian_is_refused_on_kinks(x64):
    net, x, y = _relu_problem(2, bias=False, masked=False)
    with pytest.raises(pcl.NotAtEquilibriumError, match="kink"):
        pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.Newton(tol=1e-10)))


def test_energy_change_from_differences_is_exact_below_the_energys_resolution():
    """``mlp_energy_change`` sums ``<de_l, e_l + de_l/2>`` over layers, with the error changes
    built from ``relu(z') - relu(z)`` (exact in floating point). Float32 on a residual muPC
    ReLU net with biases, an output precision, a masked target and activities crossing kinks,
    against the float64 difference of the float64 energies at the same two float32 points: the
    change agrees to 1e-4 relative, where subtracting the two float32 energies (each ~5) is off
    by more than 10 % (the Newton solver's line search cycled on exactly that)."""
    from pclandscape.activity_hessian import mlp_energy_change

    key = jax.random.key(3)
    net = pcl.MLP(key, [6] + [8] * 5 + [3], "relu", use_bias=True, residual=True, param=pcl.MuPC(),
                  output_precision=2.0)
    bs = tuple(0.3 * jax.random.normal(jax.random.fold_in(key, 10 + i), b.shape) for i, b in enumerate(net.biases))
    net = eqx.tree_at(lambda n: n.biases, net, bs)
    x = jax.random.normal(jax.random.fold_in(key, 1), (4, 6))
    y = 2.0 * jax.random.normal(jax.random.fold_in(key, 2), (4, 3))
    y = y.at[1, 2].set(jnp.nan)
    z = tuple(0.01 * jax.random.normal(jax.random.fold_in(key, 20 + i), (4, 8)) for i in range(5))
    d = tuple(jax.random.normal(jax.random.fold_in(key, 30 + i), (4, 8)) for i in range(5))
    z = tuple(a.at[:, 0].set(-1.5e-6 * b[:, 0]) for a, b in zip(z, d))  # these cross 0
    z_new = tuple(a + 3e-6 * b for a, b in zip(z, d))
    crossing = sum(int(jnp.sum((a > 0) != (b > 0))) for a, b in zip(z, z_new))
    change, scale = mlp_energy_change(net, z, z_new, x, y)
    naive = sample_energies(net, z_new, x, y) - sample_energies(net, z, x, y)
    with enable_x64(True):
        to64 = lambda t: jax.tree_util.tree_map(  # noqa: E731
            lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, t)
        net64, x64_, y64 = to64(net), to64(x), to64(y)
        truth = np.asarray(sample_energies(net64, to64(z_new), x64_, y64) - sample_energies(net64, to64(z), x64_, y64))
        energy = np.asarray(sample_energies(net64, to64(z), x64_, y64))
        c64, _ = mlp_energy_change(net64, to64(z), to64(z_new), x64_, y64)
    assert crossing > 0 and np.all(energy > 1.0)
    assert np.all(np.abs(np.asarray(c64) - truth) <= 64 * np.finfo(np.float64).eps * energy)  # truth's own rounding
    assert np.max(np.abs(np.asarray(change) - truth) / np.abs(truth)) <= 1e-4
    assert np.max(np.abs(np.asarray(naive) - truth) / np.abs(truth)) > 0.1
    assert np.all(np.asarray(scale) > np.abs(truth))
