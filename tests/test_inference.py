"""Inference: exact linear solve, Euler, Heun+PID; per-sample step sizes; F* <= L."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from conftest import random_linear_problem


def _activity_hessian_lambda_min(net, x, y):
    """Smallest eigenvalue of d^2 F_i / dz^2 (the same for every sample of a linear net)."""
    z = tuple(a[:1] for a in net.feedforward(x)[:-1])
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    g = lambda v: jax.flatten_util.ravel_pytree(pcl.activity_grad(net, unravel(v), x[:1], y[:1]))[0]
    h = jax.jacfwd(g)(flat)
    return float(jnp.linalg.eigvalsh(h)[0]), float(jnp.linalg.eigvalsh(h)[-1])


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b))


def test_exact_linear_is_stationary_and_matches_long_euler(x64, rng):
    ws, x, y = random_linear_problem(rng, [6, 5, 8, 4, 3], n=12)
    net = pcl.MLP.from_weights(ws)
    eq = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.ExactLinear())
    assert float(eq.grad_norm) <= 1e-10
    assert bool(eq.converged) and int(eq.steps) == 1
    lam_min, lam_max = _activity_hessian_lambda_min(net, jnp.asarray(x), jnp.asarray(y))
    dt = 1.0 / lam_max
    steps = int(np.ceil(40 / (dt * lam_min)))  # contraction (1 - dt lam_min)^steps < e^-40
    eq_e = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.Euler(dt=dt, steps=steps))
    assert _max_diff(eq.activities, eq_e.activities) <= 1e-10
    assert float(eq_e.energy) == pytest.approx(float(eq.energy), rel=1e-12)


def test_exact_linear_with_biases_is_stationary(x64, rng):
    ws, x, y = random_linear_problem(rng, [3, 4, 4, 2], n=5)
    bs = [rng.standard_normal(w.shape[0]) for w in ws]
    net = pcl.MLP.from_weights(ws, biases=bs)
    eq = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.ExactLinear())
    assert float(eq.grad_norm) <= 1e-10


@pytest.mark.parametrize("kind", ["biases", "mupc_residual", "ntp_precision"])
def test_exact_linear_output_route_equals_block_tridiagonal_solve(x64, kind):
    """The output-space route ((I + p G) e_L = r, d_y unknowns) and the block-tridiagonal solve
    (n_1 + ... + n_H unknowns) reach the same activities to 1e-12, with and without missing
    targets; each is stationary (||dF/dz|| at rounding level)."""
    key = jax.random.key({"biases": 0, "mupc_residual": 1, "ntp_precision": 2}[kind])
    widths = [5, 7, 7, 7, 3]
    net = {"biases": lambda k: pcl.MLP(k, widths, "linear", use_bias=True, dtype=jnp.float64),
           "mupc_residual": lambda k: pcl.MLP(k, widths, "linear", residual=True, param=pcl.MuPC(), dtype=jnp.float64),
           "ntp_precision": lambda k: pcl.MLP(k, widths, "linear", param=pcl.NTP(), output_precision=3.0,
                                              dtype=jnp.float64)}[kind](key)
    if kind == "biases":  # non-zero biases, so that the offsets enter the forward pass and r
        net = eqx.tree_at(lambda n: n.biases, net, tuple(0.3 + 0.0 * b for b in net.biases))
    kx, ky = jax.random.split(jax.random.key(7))
    x = jax.random.normal(kx, (6, 5), jnp.float64)
    y = jax.random.normal(ky, (6, 3), jnp.float64)
    for targets in (y, y.at[0, 1].set(jnp.nan).at[4, 0].set(jnp.nan).at[5].set(jnp.nan)):
        a = pcl.infer(net, x, targets, pcl.ExactLinear(method="activity"))
        b = pcl.infer(net, x, targets, pcl.ExactLinear(method="output"))
        scale = max(float(jnp.max(jnp.abs(z))) for z in a.activities)
        assert _max_diff(a.activities, b.activities) <= 1e-12 * scale
        assert float(b.grad_norm) <= 1e-12 and float(a.grad_norm) <= 1e-12
        assert float(b.energy) == pytest.approx(float(a.energy), rel=1e-12)
    # the routes differ from the feedforward pass (the equilibrium is not trivially the start)
    assert _max_diff(b.activities, net.feedforward(x)[:-1]) > 1e-3


def test_exact_linear_routes_give_the_same_derivatives_of_f_star(x64):
    """Differentiated through the solve (as the critical-point classification of fig6 does), the
    two routes give the same gradient and Hessian of F*(theta), with missing targets; the
    gradient also equals dF/dtheta at the fixed equilibrium (envelope theorem)."""
    net = pcl.MLP(jax.random.key(3), [3, 4, 4, 2], "linear", dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(4), (5, 3), jnp.float64)
    y = jax.random.normal(jax.random.key(5), (5, 2), jnp.float64).at[1, 0].set(jnp.nan)
    ws = tuple(pcl.weights(net))

    def f_star(method):
        return lambda w: pcl.infer(net.with_weights(w), x, y, pcl.ExactLinear(masked=True, method=method)).energy

    flat, unravel = jax.flatten_util.ravel_pytree(ws)
    grads = {m: jax.flatten_util.ravel_pytree(jax.grad(f_star(m))(ws))[0] for m in ("activity", "output")}
    hess = {m: jax.hessian(lambda v: f_star(m)(unravel(v)))(flat) for m in ("activity", "output")}
    np.testing.assert_allclose(grads["output"], grads["activity"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(hess["output"], hess["activity"], rtol=0, atol=1e-10)
    z = pcl.infer(net, x, y, pcl.ExactLinear(masked=True, method="output")).activities
    envelope = jax.grad(lambda w: pcl.pc_energy(net.with_weights(w), z, x, y))(ws)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(envelope)[0], grads["output"], rtol=0, atol=1e-12)
    assert float(jnp.max(jnp.abs(hess["output"]))) > 1e-2  # not a trivial zero


def test_exact_linear_auto_route_and_bad_method():
    from pclandscape.inference._exact import _output_space_is_cheaper

    ws = lambda widths: [jnp.zeros((o, i)) for i, o in zip(widths[:-1], widths[1:])]  # noqa: E731
    assert _output_space_is_cheaper(ws([784, 500, 500, 10]))
    assert not _output_space_is_cheaper(ws([3, 4, 8, 6]))  # d_y = 6 > the first hidden width 4
    with pytest.raises(ValueError, match="method='qr' is not known"):
        pcl.ExactLinear(method="qr")


@pytest.mark.parametrize("n_hidden", [1, 2, 5, 10])
def test_theorem1_exact_equilibrium_equals_closed_form(x64, n_hidden):
    rng = np.random.default_rng(100 + n_hidden)
    widths = [int(w) for w in rng.integers(2, 9, size=n_hidden + 2)]
    ws, x, y = random_linear_problem(rng, widths, n=int(rng.integers(3, 20)))
    net = pcl.MLP.from_weights(ws)
    eq = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.ExactLinear(method="activity"))
    closed = pcl.theory.equilibrated_energy(ws, jnp.asarray(x), jnp.asarray(y))
    assert float(eq.grad_norm) <= 1e-10
    assert float(eq.energy) == pytest.approx(float(closed), rel=1e-10)
    # and F* is below the loss (it is the minimum over activities that include the feedforward pass)
    assert float(closed) <= float(pcl.mse_loss(net, jnp.asarray(x), jnp.asarray(y))) + 1e-12


def test_pc_weight_gradient_at_equilibrium_is_gradient_of_closed_form(x64, rng):
    """The identity behind §2.2: dF/dtheta at z* (z* held fixed) = d F*(theta) / dtheta."""
    for widths in ([4, 6, 3], [5, 4, 6, 3, 2]):
        ws, x, y = random_linear_problem(rng, widths, n=9)
        x, y = jnp.asarray(x), jnp.asarray(y)
        net = pcl.MLP.from_weights(ws)
        z = pcl.infer(net, x, y, pcl.ExactLinear(method="activity")).activities
        pc_grad = jax.grad(lambda w: pcl.pc_energy(net.with_weights(w), z, x, y))(tuple(pcl.weights(net)))
        th_grad = jax.grad(pcl.theory.equilibrated_energy)(tuple(jnp.asarray(w) for w in ws), x, y)
        for a, b in zip(pc_grad, th_grad):
            np.testing.assert_allclose(a, b, atol=1e-9, rtol=0)
        assert max(float(jnp.max(jnp.abs(a))) for a in th_grad) > 1e-3  # not a trivial zero


@pytest.mark.parametrize(
    "activation,solver",
    [
        ("linear", pcl.ExactLinear()),
        ("tanh", pcl.Euler(dt=0.1, steps=20)),
        ("relu", pcl.Heun(t1=50.0, rtol=1e-7, atol=1e-7, tol=1e-6)),
    ],
)
def test_inference_does_not_depend_on_the_batch(x64, rng, activation, solver):
    ws, x, y = random_linear_problem(rng, [5, 6, 6, 3], n=64)
    net = pcl.MLP.from_weights(ws, activation)
    x, y = jnp.asarray(x), jnp.asarray(y)
    full = pcl.infer(net, x, y, solver)
    i = 17
    one = pcl.infer(net, x[i : i + 1], y[i : i + 1], solver)
    assert _max_diff([a[i : i + 1] for a in full.activities], one.activities) <= 1e-12


@pytest.mark.parametrize("activation", ["linear", "tanh", "relu"])
def test_equilibrated_energy_is_below_the_loss(x64, rng, activation):
    ws, x, y = random_linear_problem(rng, [4, 7, 7, 3], n=10, scale=1.5)
    net = pcl.MLP.from_weights(ws, activation)
    x, y = jnp.asarray(x), jnp.asarray(y)
    loss = float(pcl.mse_loss(net, x, y))
    # Euler is a gradient flow discretisation with dt below 2/lambda_max: F decreases at
    # every step from its feedforward value F = L. (ReLU nets have a kinked energy whose
    # stationary points can sit on a kink, where the residual need not vanish.)
    solvers = [pcl.Euler(dt=0.05, steps=400, tol=1e-3)]
    if activation == "linear":
        solvers.append(pcl.ExactLinear())
    if activation == "tanh":
        solvers.append(pcl.Heun())
    for solver in solvers:
        eq = pcl.infer(net, x, y, solver)
        assert float(eq.energy) < loss  # strictly: the feedforward pass is not stationary here
        if not isinstance(solver, pcl.Euler):
            assert bool(eq.converged)


def test_heun_reaches_exact_equilibrium_within_tolerance_and_stops_early(x64, rng):
    ws, x, y = random_linear_problem(rng, [5, 7, 6, 4], n=8)
    net = pcl.MLP.from_weights(ws)
    x, y = jnp.asarray(x), jnp.asarray(y)
    exact = pcl.infer(net, x, y, pcl.ExactLinear())
    lam_min, lam_max = _activity_hessian_lambda_min(net, x, y)
    tol = 1e-6
    solver = pcl.Heun(t1=1e5, rtol=1e-7, atol=1e-7, tol=tol, max_steps=8000)
    eq = pcl.infer(net, x, y, solver)
    assert bool(eq.converged) and float(eq.grad_norm) <= tol
    # ||z - z*|| <= ||dF/dz|| / lambda_min(d^2F/dz^2) for every sample (quadratic energy)
    per_sample = jnp.sqrt(sum(jnp.sum((a - b) ** 2, axis=1) for a, b in zip(eq.activities, exact.activities)))
    assert float(jnp.max(per_sample)) <= tol / lam_min
    assert float(eq.energy) == pytest.approx(float(exact.energy), abs=tol**2 / lam_min)
    # Heun is stable only for dt <= 2/lambda_max, so integrating to t1 would take more than
    # t1 * lambda_max / 2 steps: it stopped early, at the steady state.
    assert solver.t1 * lam_max / 2 > solver.max_steps
    assert int(eq.steps) < solver.max_steps


def test_non_converged_inference_is_reported(x64, rng):
    ws, x, y = random_linear_problem(rng, [4, 6, 6, 3], n=5, scale=2.0)
    net = pcl.MLP.from_weights(ws, "tanh")
    eq = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.Euler(dt=0.1, steps=2, tol=1e-8))
    assert not bool(eq.converged) and float(eq.grad_norm) > 1e-8
    with pytest.warns(RuntimeWarning, match="did not converge"):
        pcl.equilibrated_energy(net, jnp.asarray(x), jnp.asarray(y), pcl.Euler(dt=0.1, steps=2, tol=1e-8))


def test_diverging_inference_raises_a_clear_error(rng):
    ws, x, y = random_linear_problem(rng, [4, 6, 6, 3], n=5, scale=3.0)
    net = pcl.MLP.from_weights([jnp.asarray(w, jnp.float32) for w in ws])
    with pytest.raises(pcl.DivergenceError, match="dt=5.0"):
        pcl.infer(net, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), pcl.Euler(dt=5.0, steps=200))


def test_infer_under_jit_and_default_solver(x64, rng):
    ws, x, y = random_linear_problem(rng, [3, 4, 2], n=4)
    net = pcl.MLP.from_weights(ws)
    assert isinstance(pcl.default_solver(net), pcl.ExactLinear)
    assert isinstance(pcl.default_solver(pcl.MLP.from_weights(ws, "tanh")), pcl.Newton)
    f = jax.jit(lambda n, a, b: pcl.infer(n, a, b).energy)
    assert float(f(net, jnp.asarray(x), jnp.asarray(y))) == pytest.approx(
        float(pcl.theory.equilibrated_energy(ws, jnp.asarray(x), jnp.asarray(y))), rel=1e-12
    )


@pytest.mark.parametrize("linear_solve", ["block", "cg"])
def test_newton_reaches_a_tight_equilibrium_in_few_iterations_at_any_depth(x64, linear_solve):
    """Newton converges quadratically near a (positive-definite) equilibrium: the iteration
    count to 1e-10 stays small and does not grow with depth, and the point it finds is the
    one gradient flow converges to (||z - z*|| <= ||dF/dz|| / lambda_min)."""
    iters = {}
    for h in (2, 5, 10):
        key = jax.random.key(h)
        net = pcl.MLP(key, [4] + [6] * h + [3], "tanh")
        x = jax.random.normal(jax.random.fold_in(key, 1), (5, 4))
        y = jax.random.normal(jax.random.fold_in(key, 2), (5, 3))
        eq = pcl.infer(net, x, y, pcl.Newton(tol=1e-10, linear_solve=linear_solve))
        assert bool(eq.converged) and float(eq.grad_norm) <= 1e-10
        iters[h] = int(eq.steps)
        if h == 2:
            flow = pcl.infer(net, x, y, pcl.Euler(dt=0.2, steps=20_000, tol=1e-11, stop_at_tol=True))
            assert bool(flow.converged) and int(flow.steps) < 20_000  # stopped early, on the residual
            assert _max_diff(eq.activities, flow.activities) <= 1e-9
            assert float(eq.energy) == pytest.approx(float(flow.energy), rel=1e-12)
            assert int(flow.steps) > 10 * iters[h]
    assert max(iters.values()) <= 15, iters


def test_newton_is_one_exact_step_on_linear_nets_and_per_sample(x64, rng):
    ws, x, y = random_linear_problem(rng, [5, 7, 6, 4], n=9)
    net = pcl.MLP.from_weights(ws)
    x, y = jnp.asarray(x), jnp.asarray(y)
    exact = pcl.infer(net, x, y, pcl.ExactLinear())
    newton = pcl.infer(net, x, y, pcl.Newton(tol=1e-10, linear_solve="block"))
    assert int(newton.steps) == 1 and _max_diff(newton.activities, exact.activities) <= 1e-12
    tanh = pcl.MLP.from_weights(ws, "tanh")
    full = pcl.infer(tanh, x, y, pcl.Newton(tol=1e-10))
    one = pcl.infer(tanh, x[3:4], y[3:4], pcl.Newton(tol=1e-10))
    assert _max_diff([a[3:4] for a in full.activities], one.activities) <= 1e-10


def test_newton_needs_an_mlp_for_block_solves_and_valid_options():
    cnn = pcl.CNN(jax.random.key(0), "relu", channels=(2, 2, 2), hidden=4)
    with pytest.raises(ValueError, match=r"linear_solve=pcl.CG\(\)"):
        pcl.infer(cnn, jnp.zeros((1, 3, 32, 32)), jnp.zeros((1, 10)), pcl.Newton(linear_solve="block"))
    with pytest.raises(ValueError, match="linear_solve"):
        pcl.Newton(linear_solve="lu")
    # options as objects; the strings are shorthands, cg_max_steps is deprecated
    assert pcl.Newton(linear_solve="block") == pcl.Newton(linear_solve=pcl.BlockTridiagonal())
    assert pcl.Newton().linear_solve == pcl.CG(max_steps=100)
    with pytest.warns(DeprecationWarning, match="pcl.CG\\(max_steps=n\\)"):
        assert pcl.Newton(cg_max_steps=7).linear_solve == pcl.CG(max_steps=7)
    for bad in (-1.0, True, "8"):
        with pytest.raises(ValueError, match="xtol"):
            pcl.Newton(xtol=bad)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_newton_stops_at_the_rounding_floor_where_it_cannot_do_better(activation):
    """In float32 a tolerance of 1e-9 is below what float32 activities can reach on this SP
    residual net (its floor is ~2e-6). With the floor rule off (``xtol=0``) Newton used all
    its iterations; with it on, it stops in a few, reports the sample unconverged, and ends
    as close to the float64 equilibrium (computed independently, to 1e-13) as the capped run:
    within a few rounding units ``eps ||z*_i||``. Where the tolerance is reachable (1e-5 in
    float32, 1e-12 in float64) the rule changes nothing, bit for bit."""
    from pclandscape._compat import enable_x64
    from pclandscape.inference._verify import _as_float64

    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    net = pcl.MLP(k1, [5, 16, 16, 16, 3], activation, residual=True, param=pcl.SP())
    x, y = 3 * jax.random.normal(k2, (6, 5)), jax.random.normal(k3, (6, 3))
    capped = pcl.infer(net, x, y, pcl.Newton(tol=1e-9, max_steps=60, xtol=0))
    floor = pcl.infer(net, x, y, pcl.Newton(tol=1e-9, max_steps=60))
    assert int(capped.steps) == 60 and not bool(capped.converged)
    assert int(floor.steps) <= 15 and not bool(floor.converged) and 1e-9 < float(floor.grad_norm) < 1e-5
    with enable_x64(True):
        net64, x64, y64 = _as_float64((net, x, y))
        star = pcl.infer(net64, x64, y64, pcl.Newton(tol=1e-13), init=_as_float64(floor.activities))
        assert bool(star.converged)
        z_star = [np.asarray(a) for a in star.activities]
        # the rule is silent where float64 reaches its tolerance
        a = pcl.infer(net64, x64, y64, pcl.Newton(tol=1e-12))
        b = pcl.infer(net64, x64, y64, pcl.Newton(tol=1e-12, xtol=0))
        assert int(a.steps) == int(b.steps) and _max_diff(a.activities, b.activities) == 0.0

    def rounding_units(z):
        d = sum(((np.asarray(u, np.float64) - v) ** 2).sum(1) for u, v in zip(z, z_star))
        n = sum((v**2).sum(1) for v in z_star)
        return float(np.max(np.sqrt(d / n))) / np.finfo(np.float32).eps

    assert rounding_units(floor.activities) <= 4.0 and rounding_units(capped.activities) <= 4.0
    a = pcl.infer(net, x, y, pcl.Newton(tol=1e-5))
    b = pcl.infer(net, x, y, pcl.Newton(tol=1e-5, xtol=0))
    assert bool(a.converged) and int(a.steps) == int(b.steps) and _max_diff(a.activities, b.activities) == 0.0
    # the messages say which: the floor (float64 or a larger tol), or the cap (more iterations)
    with pytest.warns(RuntimeWarning, match=r"stopped after \d+ of its max_steps = 60 iterations at the rounding floor"):
        pcl.equilibrated_energy(net, x, y, pcl.Newton(tol=1e-9, max_steps=60))
    with pytest.warns(RuntimeWarning, match="used all of its max_steps = 60 iterations: raise max_steps"):
        pcl.equilibrated_energy(net, x, y, pcl.Newton(tol=1e-9, max_steps=60, xtol=0))


@pytest.mark.parametrize("activation", ["linear", "tanh", "relu"])
def test_stacked_gradient_equals_autodiff_with_biases_and_masked_targets(x64, rng, activation):
    from pclandscape._stacked import stacked_mlp

    net = pcl.MLP(jax.random.key(3), [5, 4, 4, 4, 3], activation, use_bias=True)
    net = eqx.tree_at(lambda n: n.biases, net, tuple(jnp.asarray(rng.normal(size=b.shape)) for b in net.biases))
    x, y = jnp.asarray(rng.normal(size=(6, 5))), jnp.asarray(rng.normal(size=(6, 3)))
    y = y.at[1, 2].set(jnp.nan)  # an unobserved target
    z = tuple(jnp.asarray(rng.normal(size=(6, 4))) for _ in range(3))
    stk = stacked_mlp(net, x, y)
    assert _max_diff(stk.unstack(stk.grad(stk.stack(z))), pcl.activity_grad(net, z, x, y)) <= 1e-13
    # the solver gives the same activities either way; unrolling changes nothing either
    ref = pcl.infer(net, x, y, pcl.Euler(dt=0.1, steps=7, stacked=False, unroll=1))
    for kw in (dict(stacked=True, unroll=1), dict(stacked=True, unroll=True), dict(stacked=False, unroll=3)):
        got = pcl.infer(net, x, y, pcl.Euler(dt=0.1, steps=7, **kw))
        assert _max_diff(got.activities, ref.activities) <= 1e-13


def test_stacked_form_applies_only_to_equal_hidden_widths():
    from pclandscape._stacked import stacked_mlp

    x, y = jnp.zeros((2, 5)), jnp.zeros((2, 3))
    assert stacked_mlp(pcl.MLP(jax.random.key(0), [5, 4, 6, 3]), x, y) is None
    assert stacked_mlp(pcl.MLP(jax.random.key(0), [5, 4, 3]), x, y) is None
    assert stacked_mlp(pcl.MLP(jax.random.key(0), [5, 4, 4, 3]), x, y) is not None
    with pytest.raises(ValueError, match="unroll"):
        pcl.Euler(unroll=0)


def test_closed_form_activity_hvp_equals_autodiff_and_the_blocks(x64, rng):
    """``mlp_errors`` gives the activity gradient and energies in closed form; ``mlp_activity_hvp``
    (used by Newton-CG) equals forward-over-reverse autodiff for a
    smooth net (biases, a masked target), and on a ReLU piece with held activities equals the
    product with the block-tridiagonal matrix of ``activity_hessian_blocks``."""
    from pclandscape.activity_hessian import activity_hessian_blocks, mlp_activity_hvp, mlp_errors

    widths = [3, 4, 5, 4, 2]
    ws = [jnp.asarray(rng.normal(size=(o, i))) for i, o in zip(widths[:-1], widths[1:])]
    bs = [jnp.asarray(rng.normal(size=(o,))) for o in widths[1:]]
    x, y = jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(6, 2))).at[2, 1].set(jnp.nan)
    z = tuple(jnp.asarray(rng.normal(size=(6, n))) for n in widths[1:-1])
    v = tuple(jnp.asarray(rng.normal(size=(6, n))) for n in widths[1:-1])
    net = pcl.MLP.from_weights(ws, "tanh", biases=bs)
    errors, backs, energies = mlp_errors(net, z, x, y)  # dF/dz_l = e_l - f'(z_l) W_{l+1}^T e_{l+1}
    grads = tuple(e - (1 - jnp.tanh(a) ** 2) * c for e, c, a in zip(errors, backs, z))
    assert _max_diff(grads, pcl.activity_grad(net, z, x, y)) <= 1e-12
    np.testing.assert_allclose(energies, pcl.sample_energies(net, z, x, y), rtol=1e-14)
    auto = jax.jvp(lambda zz: pcl.activity_grad(net, zz, x, y), (z,), (v,))[1]
    assert _max_diff(mlp_activity_hvp(net, z, x, y)(v), auto) <= 1e-12
    relu = pcl.MLP.from_weights(ws, "relu", biases=bs)
    slopes = [(a > 0).astype(a.dtype) for a in z]
    held = [jnp.asarray(rng.random(a.shape) < 0.3) for a in z]
    diag, off = activity_hessian_blocks(relu, z, x, y, slopes=slopes, fixed=held)
    blocks = []
    for l in range(len(z)):
        b = jnp.einsum("nij,nj->ni", diag[l], v[l])
        if l > 0:
            b = b + jnp.einsum("nij,nj->ni", off[l - 1], v[l - 1])
        if l < len(z) - 1:
            b = b + jnp.einsum("nji,nj->ni", off[l], v[l + 1])
        blocks.append(b)
    assert _max_diff(mlp_activity_hvp(relu, z, x, y, slopes=slopes, fixed=held)(v), blocks) <= 1e-12
    assert _max_diff(mlp_activity_hvp(relu, z, x, y, slopes=slopes)(v),
                     jax.jvp(lambda zz: pcl.activity_grad(relu, zz, x, y), (z,), (v,))[1]) <= 1e-12


def test_euler_backtracking_follows_its_rule_per_sample(x64):
    """Euler(backtrack=True): a step that would raise a sample's energy is rejected and that
    sample's dt halved, independently of the other samples. Checked against a NumPy loop over
    samples with the linear net's energy and gradient written out
    (e_l = z_l - W_l z_{l-1}, dF_i/dz_l = e_l - W_{l+1}^T e_{l+1}), at a dt where plain Euler
    diverges; its energy lies between the exact minimum and the feedforward energy."""
    rng = np.random.default_rng(7)
    ws = [rng.standard_normal((4, 3)), 2.0 * rng.standard_normal((4, 4)), rng.standard_normal((2, 4))]
    x, y = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    net = pcl.MLP.from_weights(ws, "linear")
    dt, steps = 0.9, 400

    def energy_grad(z, xi, yi):
        zs = [xi, *z, yi]
        e = [zs[l] - ws[l - 1] @ zs[l - 1] for l in range(1, 4)]
        return 0.5 * sum(float(v @ v) for v in e), [e[l] - ws[l + 1].T @ e[l + 1] for l in range(2)]

    ref, halvings = [], 0
    for i in range(3):
        z = [ws[0] @ x[i], ws[1] @ ws[0] @ x[i]]  # the feedforward start
        f, g = energy_grad(z, x[i], y[i])
        h = dt
        for _ in range(steps):
            cand = [a - h * b for a, b in zip(z, g)]
            f_new, g_new = energy_grad(cand, x[i], y[i])
            if f_new <= f:
                z, f, g = cand, f_new, g_new
            else:
                h, halvings = h / 2, halvings + 1
        ref.append(np.concatenate(z))
    assert halvings >= 3  # the rule was exercised
    eq = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.Euler(dt=dt, steps=steps, backtrack=True, tol=1e-8))
    got = np.concatenate([np.asarray(a) for a in eq.activities], axis=1)
    np.testing.assert_allclose(got, np.stack(ref), rtol=1e-10, atol=1e-12)
    exact = pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.ExactLinear())
    assert float(exact.energy) < float(eq.energy) < float(pcl.mse_loss(net, jnp.asarray(x), jnp.asarray(y)))
    with pytest.raises(pcl.DivergenceError):  # the same dt without backtracking is unstable
        pcl.infer(net, jnp.asarray(x), jnp.asarray(y), pcl.Euler(dt=dt, steps=steps))


def test_heun_error_norm_is_a_function_or_its_name(x64):
    """Heun's error norm is a callable (as in diffrax); the names are shorthands for the same
    functions, so both give identical runs."""
    import optimistix as optx

    net = pcl.MLP(jax.random.key(0), [3, 4, 2], "tanh", init_std=0.5)
    x, y = jax.random.normal(jax.random.key(1), (2, 3)), jax.random.normal(jax.random.key(2), (2, 2))
    by_name = pcl.infer(net, x, y, pcl.Heun(error_norm="max"))
    by_fn = pcl.infer(net, x, y, pcl.Heun(error_norm=optx.max_norm))
    np.testing.assert_array_equal(by_name.activities[0], by_fn.activities[0])
    assert int(by_name.steps) == int(by_fn.steps) and bool(by_fn.converged)
    with pytest.raises(ValueError, match="norm function"):
        pcl.Heun(error_norm="l1")


def test_epc_reaches_the_same_equilibrium_as_the_exact_solves(x64, rng):
    """Gradient descent on the errors (e_l = z_l - mu_l(z_{l-1})) has the equilibria of the
    activity energy: on linear MLPs (plain, and residual under muPC) its end point equals
    ExactLinear's unique equilibrium, on a tanh net Newton's, to a residual of 1e-10; masked
    targets included. From the feedforward pass (e = 0) on a depth-20 linear chain it reaches
    a residual of 1e-3 in a few steps where gradient flow on the activities needs > 1000."""
    ws, x, y = random_linear_problem(rng, [6, 5, 8, 4, 3], n=12)
    x, y = jnp.asarray(x), jnp.asarray(y).at[2, 1].set(jnp.nan)
    epc = pcl.EPC(dt=0.1, tol=1e-10, steps=20000)
    nets = [(pcl.MLP.from_weights(ws), pcl.ExactLinear()),
            (pcl.MLP(jax.random.key(0), [6, 7, 7, 7, 3], "linear", residual=True, param=pcl.MuPC(),
                     dtype=jnp.float64), pcl.ExactLinear()),
            (pcl.MLP(jax.random.key(1), [6, 7, 7, 3], "tanh", init_std=0.8, dtype=jnp.float64),
             pcl.Newton(tol=1e-12))]
    for net, exact in nets:
        ref = pcl.infer(net, x, y, exact)
        eq = pcl.infer(net, x, y, epc)
        assert bool(eq.converged) and float(eq.grad_norm) <= 1e-10
        assert _max_diff(eq.activities, ref.activities) <= 1e-9
        assert float(eq.energy) == pytest.approx(float(ref.energy), rel=1e-12)

    xc, yc = jnp.ones((4, 1)), -0.5 * jnp.ones((4, 1))
    chain = pcl.MLP.from_weights([jnp.full((1, 1), 0.9)] * 20)
    fast = pcl.infer(chain, xc, yc, pcl.EPC(dt=0.1, tol=1e-3))
    slow = pcl.infer(chain, xc, yc, pcl.Euler(dt=0.1, steps=100000, tol=1e-3, stop_at_tol=True))
    assert bool(fast.converged) and bool(slow.converged)
    assert int(fast.steps) <= 20 and int(slow.steps) >= 1000


def test_epc_options_and_divergence_are_clear(rng):
    for bad in (dict(dt=0.0), dict(dt=-1.0), dict(steps=0), dict(steps=2.5), dict(tol=float("nan"))):
        with pytest.raises(ValueError, match="EPC"):
            pcl.EPC(**bad)
    ws, x, y = random_linear_problem(rng, [4, 6, 6, 3], n=5, scale=3.0)
    net = pcl.MLP.from_weights([jnp.asarray(w, jnp.float32) for w in ws])
    with pytest.raises(pcl.DivergenceError, match=r"EPC\(dt=5\).*d\^2F/de\^2"):
        pcl.infer(net, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), pcl.EPC(dt=5.0, steps=200))


def test_verify_equilibrium_evaluates_the_float32_point_in_float64():
    """At float32 activities ``z32 = fl(z* + delta)`` of a linear net (``z*`` its exact
    equilibrium) the gradient is exactly ``H (z32 - z*)`` (``H`` the constant activity Hessian,
    built in closed form): ``verify_equilibrium`` gives its per-sample norms to float64
    rounding at a residual of ~1e-5, where a float32 evaluation carries rounding errors of the
    order of the residual itself. It leaves the caller in float32."""
    from pclandscape._compat import enable_x64
    from pclandscape.activity_hessian import dense_activity_hessian
    from pclandscape.inference._verify import _as_float64

    k1, k2, k3, k4 = jax.random.split(jax.random.key(3), 4)
    net = pcl.MLP(k1, [6, 9, 9, 9, 3], "linear")
    x, y = jax.random.normal(k2, (5, 6)), jax.random.normal(k3, (5, 3))
    with enable_x64(True):
        net64, x64, y64 = _as_float64((net, x, y))
        z_star = pcl.infer(net64, x64, y64, pcl.ExactLinear(tol=1e-12)).activities
        delta = tuple(1e-5 * jax.random.normal(k, a.shape, jnp.float64)
                      for k, a in zip(jax.random.split(k4, len(z_star)), z_star))
        z32 = tuple(np.asarray(a + d, np.float32) for a, d in zip(z_star, delta))
        offset = jnp.concatenate([jnp.asarray(a, jnp.float64) - s for a, s in zip(z32, z_star)], axis=1)
        h = dense_activity_hessian(net64, z_star, x64, y64)
        expected = np.asarray(jnp.linalg.norm(jnp.einsum("nij,nj->ni", h, offset), axis=1))
    check = pcl.verify_equilibrium(net, x, y, z32, tol=float(np.median(expected)))
    np.testing.assert_allclose(check.per_sample, expected, rtol=1e-9)
    assert check.residual == pytest.approx(float(expected.max()), rel=1e-9) and 1e-6 < check.residual < 1e-3
    assert check.reported is None and not check.verified  # the worst sample is above the median
    assert jnp.zeros(1).dtype == jnp.float32  # float64 did not leak


def test_verify_equilibrium_takes_an_equilibrium_and_refuses_bad_input():
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    net = pcl.MLP(k1, [4, 6, 6, 2], "tanh")
    x, y = jax.random.normal(k2, (3, 4)), jax.random.normal(k3, (3, 2))
    eq = pcl.infer(net, x, y, pcl.Newton(tol=1e-4))
    check = pcl.verify_equilibrium(net, x, y, eq)
    assert check.reported == float(eq.grad_norm) and check.tol == 1e-4
    assert check.verified == (check.residual <= 1e-4) and check.per_sample.shape == (3,)
    with pytest.raises(ValueError, match="pass tol"):
        pcl.verify_equilibrium(net, x, y, eq.activities)
    with pytest.raises(ValueError, match="hidden"):
        pcl.verify_equilibrium(net, x, y, eq.activities[:1], tol=1e-4)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda z: pcl.verify_equilibrium(net, x, y, z, tol=1e-4).residual)(eq.activities)
