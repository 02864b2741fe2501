"""Scaled and residual MLPs (muPC / NTP parameterisations, identity skips, output precision):
the predictions against a hand transcription of the muPC scalings, and Theorem 1 generalised
against the exact inference, to 64 layers, in float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl


def _hand_forward(ws, x, act, scal, residual):
    """The muPC forward pass written out: z_l = a_l W_l f(z_{l-1}) [+ z_{l-1}]."""
    z = x
    L = len(ws)
    for l, (w, a) in enumerate(zip(ws, scal), start=1):
        h = z if l == 1 else act(z)
        new = a * h @ w.T
        if residual and 1 < l < L:
            new = new + z
        z = new
    return z


@pytest.mark.parametrize("param, residual", [(pcl.SP(), False), (pcl.MuPC(), True), (pcl.MuPC(), False),
                                             (pcl.NTP(), True), (pcl.MuPC(gamma=2.0), True)])
def test_scalings_and_predictions_follow_mupc(x64, param, residual):
    """a_1 = 1/sqrt(D); a_l = 1/sqrt(N) (1/sqrt(N L) with skips); a_L = 1/N (muPC) or
    1/sqrt(N) (NTP), divided by gamma (muPC paper, arXiv:2505.13124; jpc's _get_param_scalings)."""
    D, N, L = 6, 5, 4
    widths = [D, N, N, N, 3]
    net = pcl.MLP(jax.random.key(0), widths, "tanh", residual=residual, param=param, dtype=jnp.float64)
    if isinstance(param, pcl.SP):
        expect = [1.0] * L
    else:
        hidden = 1 / math.sqrt(N * L) if residual else 1 / math.sqrt(N)
        last = 1 / N if isinstance(param, pcl.MuPC) else 1 / math.sqrt(N)
        expect = [1 / math.sqrt(D), hidden, hidden, last / (param.gamma or 1.0)]
    np.testing.assert_allclose(net.scalings, expect, rtol=1e-15)
    x = jax.random.normal(jax.random.key(1), (7, D), jnp.float64)
    ws = [np.asarray(w) for w in pcl.weights(net)]
    np.testing.assert_allclose(np.asarray(net(x)), _hand_forward(ws, np.asarray(x), np.tanh, expect, residual),
                               rtol=1e-13)


def test_output_precision_weights_the_output_term(x64):
    net = pcl.MLP(jax.random.key(0), [3, 4, 4, 2], "tanh", output_precision=2.5, dtype=jnp.float64)
    plain = pcl.MLP(jax.random.key(0), [3, 4, 4, 2], "tanh", dtype=jnp.float64)
    x, y = jnp.ones((5, 3)), jnp.zeros((5, 2))
    z = tuple(a + 0.1 for a in net.feedforward(x)[:-1])
    per_layer = pcl.layer_energies(plain, z, x, y)
    assert float(pcl.pc_energy(net, z, x, y)) == pytest.approx(float(per_layer[:-1].sum() + 2.5 * per_layer[-1]), rel=1e-14)
    # at the feedforward pass F = p * L
    assert float(pcl.pc_energy(net, net.feedforward(x)[:-1], x, y)) == pytest.approx(2.5 * float(pcl.mse_loss(net, x, y)))
    assert not pcl.networks.is_standard_mlp(net)


@pytest.mark.parametrize("n_layers", [2, 5, 16, 64])
@pytest.mark.parametrize("param, residual, precision", [
    (pcl.SP(), False, 1.0), (pcl.SP(), True, 1.0), (pcl.MuPC(), True, 1.0), (pcl.MuPC(gamma=0.5), False, 3.0),
    (pcl.NTP(), True, 0.25),
])
def test_theorem_1_generalised_equals_exact_inference(x64, n_layers, param, residual, precision):
    """F* from the rescaling S = I/p + sum_l M_{L:l} M_{L:l}^T (M_l = a_l W_l + I on skips)
    against the block-tridiagonal solve of the stationarity conditions, to 1e-10 relative;
    and the solve's residual ||dF/dz|| at machine precision (it is a real equilibrium)."""
    widths = [4] + [5] * (n_layers - 1) + [3]
    net = pcl.MLP(jax.random.key(n_layers), widths, "linear", residual=residual, param=param,
                  output_precision=precision, dtype=jnp.float64)
    if isinstance(param, pcl.SP):  # keep the deep SP product O(1) (muPC's scalings do this by design):
        # W_l ~ N(0, 1/(4 n)) without skips, the branches shrunk by 1/sqrt(L) with them
        net = net.with_weights([w / (math.sqrt(n_layers) if residual else 2) for w in pcl.weights(net)])
    kx, ky = jax.random.split(jax.random.key(99))
    x = jax.random.normal(kx, (9, 4), jnp.float64)
    y = jax.random.normal(ky, (9, 3), jnp.float64)
    eq = pcl.infer(net, x, y, pcl.ExactLinear(tol=1e-9, method="activity"))
    closed = pcl.theory.network_equilibrated_energy(net, x, y)
    assert float(eq.grad_norm) <= 1e-10 * max(1.0, float(eq.energy))
    np.testing.assert_allclose(float(eq.energy), float(closed), rtol=1e-10)


def test_residual_mlp_needs_equal_hidden_widths():
    with pytest.raises(ValueError, match="residual=True needs equal hidden widths"):
        pcl.MLP(jax.random.key(0), [3, 4, 5, 2], residual=True)
    with pytest.raises(ValueError, match="param=.* must be pcl.SP"):
        pcl.MLP(jax.random.key(0), [3, 4, 2], param="mupc")
    with pytest.raises(ValueError, match=r"MuPC\(gamma=0\)"):
        pcl.MuPC(gamma=0)


@pytest.mark.parametrize("param, residual, precision", [(pcl.MuPC(), True, 1.0), (pcl.NTP(gamma=2.0), False, 2.0)])
def test_energy_hessian_of_scaled_residual_nets(x64, param, residual, precision):
    """The implicit Hessian of F* (autodiff through the exact equilibrium) equals the Hessian of
    the generalised Theorem 1 (autodiff of the closed form), and Lanczos finds its extremes."""
    net = pcl.MLP(jax.random.key(3), [3, 4, 4, 4, 2], "linear", residual=residual, param=param,
                  output_precision=precision, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(4), (6, 3), jnp.float64)
    y = jax.random.normal(jax.random.key(5), (6, 2), jnp.float64)
    implicit = np.asarray(pcl.energy_hessian(net, x, y, pcl.Implicit()))
    closed = np.asarray(pcl.energy_hessian(net, x, y, pcl.Theory()))
    np.testing.assert_allclose(implicit, closed, atol=1e-10 * np.abs(closed).max())
    ev = np.linalg.eigvalsh(closed)
    op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit())
    lo = pcl.lanczos(op, k=2, which="smallest")
    np.testing.assert_allclose(np.asarray(lo.eigenvalues), ev[:2], atol=1e-8 * np.abs(ev).max())


def _autodiff_activity_hessian(net, z, x, y, i):
    """``d^2 F_i / dz_i^2`` of sample ``i`` by ``jax.hessian`` of its energy (dense, m x m)."""
    sizes = [a.shape[1] for a in z]

    def f(flat):
        parts = jnp.split(flat, np.cumsum(sizes)[:-1])
        return pcl.sample_energies(net, [p[None] for p in parts], x[i : i + 1], y[i : i + 1])[0]

    return np.asarray(jax.hessian(f)(jnp.concatenate([a[i] for a in z])))


def test_activity_spectrum_of_a_one_hidden_layer_linear_net(x64):
    """d^2F_i/dz_1^2 = I + p M_2^T M_2: eigenvalues 1 + p sigma_j(M_2)^2 (and 1 where M_2 has
    fewer rows), from the SVD, against the assembled Hessian and against Lanczos."""
    net = pcl.MLP(jax.random.key(0), [3, 6, 2], "linear", param=pcl.NTP(), output_precision=2.0, dtype=jnp.float64)
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
    m2 = np.asarray(net.linear_maps()[0][1])
    sv = np.linalg.svd(m2, compute_uv=False)
    lam_max, lam_min = 1 + 2.0 * sv.max() ** 2, 1.0  # 6 activities, rank-2 M_2: eigenvalue 1 remains
    for spec in (pcl.activity_spectrum(net, x, y), pcl.activity_spectrum(net, x, y, dense_max=1)):
        np.testing.assert_allclose(np.asarray(spec.lambda_max), lam_max, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(spec.lambda_min), lam_min, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(spec.condition), lam_max / lam_min, rtol=1e-10)
    assert float(pcl.activity_condition_number(net, x, y)) == pytest.approx(lam_max, rel=1e-10)


def test_activity_spectrum_closed_form_blocks_match_autodiff(x64):
    """A plain tanh MLP uses the closed-form blocks, a residual muPC one autodiff: both against
    jax.hessian of one sample's energy."""
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (3, 2), jnp.float64)
    for net in (pcl.MLP(jax.random.key(0), [4, 5, 5, 2], "tanh", dtype=jnp.float64),
                pcl.MLP(jax.random.key(0), [4, 5, 5, 5, 2], "tanh", residual=True, param=pcl.MuPC(), dtype=jnp.float64)):
        z = tuple(a + 0.3 for a in net.feedforward(x)[:-1])
        spec = pcl.activity_spectrum(net, x, y, z)
        for i in range(3):
            ev = np.linalg.eigvalsh(_autodiff_activity_hessian(net, z, x, y, i))
            assert float(spec.lambda_min[i]) == pytest.approx(ev[0], rel=1e-10, abs=1e-12)
            assert float(spec.lambda_max[i]) == pytest.approx(ev[-1], rel=1e-10)


def test_activity_spectrum_by_bisection_on_the_band_equals_the_dense_eigenvalues(x64):
    """Above dense_max an MLP's extreme eigenvalues come from bisection on block Cholesky
    factorisations of its block-tridiagonal Hessian: against eigvalsh of the assembled
    Hessians, to 1e-9 relative, for uneven widths, a residual muPC net, ReLU (its pieces'
    slopes), an output precision with a missing target, and activities far from the
    feedforward pass where tanh's f'' term makes the Hessian indefinite (lambda_min < 0)."""
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (3, 2), jnp.float64).at[1, 0].set(jnp.nan)
    cases = [(pcl.MLP(jax.random.key(0), [4, 5, 3, 6, 2], "tanh", dtype=jnp.float64), 0.3),
             (pcl.MLP(jax.random.key(0), [4, 5, 5, 5, 2], "tanh", residual=True, param=pcl.MuPC(), dtype=jnp.float64), 0.3),
             (pcl.MLP(jax.random.key(0), [4, 6, 6, 2], "relu", residual=True, output_precision=3.0, dtype=jnp.float64), 0.3),
             (pcl.MLP(jax.random.key(0), [4, 5, 5, 5, 2], "tanh", init_std=2.0, dtype=jnp.float64), 1.5)]
    for net, shift in cases:
        z = tuple(a + shift for a in net.feedforward(x)[:-1])
        dense = pcl.activity_spectrum(net, x, y, z)
        band = pcl.activity_spectrum(net, x, y, z, dense_max=1)
        assert (dense.method, band.method) == ("dense", "bisection")
        scale = float(jnp.max(jnp.abs(dense.lambda_max)))
        np.testing.assert_allclose(np.asarray(band.lambda_min), np.asarray(dense.lambda_min), rtol=1e-9, atol=1e-11 * scale)
        np.testing.assert_allclose(np.asarray(band.lambda_max), np.asarray(dense.lambda_max), rtol=1e-9)
        np.testing.assert_array_equal(np.isinf(np.asarray(band.condition)), np.asarray(dense.lambda_min) <= 0)
    assert float(jnp.min(dense.lambda_min)) < -0.1  # the indefinite case was exercised
    with pytest.raises(ValueError, match="method='bisection'.*needs an MLP predicting W f"):
        pcl.activity_spectrum(net.with_prediction("f(W z)"), x, y, method="bisection")
    with pytest.raises(ValueError, match="method='exact'"):
        pcl.activity_spectrum(net, x, y, method="exact")


def test_activity_spectrum_by_lanczos_compiles_once_for_every_sample(x64):
    """With method="lanczos" every sample gets its own Lanczos runs; they share one set of compiled
    programs. A second batch (new samples, same shapes) traces no function at all, and the
    values match the assembled Hessians. (Each sample used to build a new closure, so every
    sample and end compiled again: 4 minutes and the process's memory maps at 128 layers.)"""
    net = pcl.MLP(jax.random.key(0), [4, 5, 5, 5, 2], "tanh", residual=True, param=pcl.MuPC(), dtype=jnp.float64)
    data = [(jax.random.normal(jax.random.key(k), (3, 4), jnp.float64),
             jax.random.normal(jax.random.key(k + 10), (3, 2), jnp.float64)) for k in (1, 2)]
    pcl.activity_spectrum(net, *data[0], method="lanczos")
    traces = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traces.append(kw)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        spec = pcl.activity_spectrum(net, *data[1], method="lanczos")
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert spec.method == "lanczos" and traces == []
    dense = pcl.activity_spectrum(net, *data[1])
    assert dense.method == "dense"
    np.testing.assert_allclose(np.asarray(spec.lambda_min), np.asarray(dense.lambda_min), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(spec.lambda_max), np.asarray(dense.lambda_max), rtol=1e-8)
    wide = pcl.MLP(jax.random.key(0), [4, 40, 40, 40, 2], "tanh", residual=True, param=pcl.MuPC(), dtype=jnp.float64)
    with pytest.warns(RuntimeWarning, match=r"did not converge for sample\(s\) \[0, 1, 2\] of 3 within max_iter=16"):
        pcl.activity_spectrum(wide, *data[1], method="lanczos", max_iter=16)  # 120 activities, 16 products


def test_activity_condition_number_is_recorded_during_training():
    import optax

    net = pcl.MLP(jax.random.key(0), [4, 6, 6, 6, 2], "linear", residual=True, param=pcl.MuPC())  # convex in z
    x = jax.random.normal(jax.random.key(1), (32, 4))
    y = x[:, :2]
    _, hist = pcl.train(net, (x, y), rule="pc", solver=pcl.Euler(dt=0.1, steps=20), optimizer=optax.sgd(0.1), steps=4,
                        batch_size=8, metrics={"activity_cond": pcl.activity_condition_number}, progress=None)
    cond = np.asarray(hist.extra["activity_cond"])
    assert cond.shape == (4,) and np.all(np.isfinite(cond)) and np.all(cond >= 1.0)


def _residual_net(act, depth=6, width=5, precision=2.5, param=None):
    return pcl.MLP(jax.random.key(7), [4] + [width] * (depth - 1) + [3], act, residual=True,
                   param=param or pcl.MuPC(), output_precision=precision, dtype=jnp.float64)


def test_closed_form_activity_hessian_of_residual_scaled_nets_matches_autodiff(x64):
    """Blocks (J = a W diag(f') + I on skip layers, precision on the output block) and the
    matrix-free products against autodiff, with an unobserved target entry."""
    from pclandscape.activity_hessian import dense_activity_hessian, mlp_activity_hvp, per_sample_flat

    net = _residual_net("tanh")
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (3, 3), jnp.float64).at[1, 2].set(jnp.nan)
    z = tuple(a + 0.2 * jax.random.normal(jax.random.key(i), a.shape, jnp.float64)
              for i, a in enumerate(net.feedforward(x)[:-1]))
    assert pcl.networks.has_block_closed_form(net) and not pcl.networks.is_standard_mlp(net)
    closed = np.asarray(dense_activity_hessian(net, z, x, y))
    v = tuple(jax.random.normal(jax.random.key(10 + i), a.shape, jnp.float64) for i, a in enumerate(z))
    hv = per_sample_flat(mlp_activity_hvp(net, z, x, y)(v))
    for i in range(3):
        auto = _autodiff_activity_hessian(net, z, x, y, i)
        np.testing.assert_allclose(closed[i], auto, atol=1e-12)
        np.testing.assert_allclose(np.asarray(hv[i]), auto @ np.asarray(per_sample_flat(v)[i]), atol=1e-12)


def _error_jacobian(net, z, x, i):
    """``K = de/dz`` of sample ``i`` (hidden errors by hidden activities) by autodiff, dense."""
    from pclandscape._energies import hidden_errors

    sizes = [a.shape[1] for a in z]

    def errors_of(flat):
        zz, o = [], 0
        for k, n in enumerate(sizes):
            zz.append(z[k].at[i].set(flat[o:o + n]))
            o += n
        return jnp.concatenate([a[i] for a in hidden_errors(net, x, tuple(zz))])

    return np.asarray(jax.jacobian(errors_of)(jnp.concatenate([a[i] for a in z])))


def _dense_map(fn, z, i):
    """The matrix of a per-sample linear map ``fn`` on tuples shaped like ``z``, sample ``i``."""
    from pclandscape.activity_hessian import per_sample_flat, unflatten_per_sample

    m = sum(a.shape[1] for a in z)
    cols = []
    for j in range(m):
        v = jnp.zeros((z[0].shape[0], m), jnp.float64).at[i, j].set(1.0)
        cols.append(np.asarray(per_sample_flat(fn(unflatten_per_sample(v, z)))[i]))
    return np.stack(cols, 1)


@pytest.mark.parametrize("kind", ["residual mupc tanh", "sp relu pieces held", "f(W z) tanh"])
def test_error_preconditioner_inverts_the_hidden_error_gram(x64, kind):
    """``(K^T K)^{-1}`` with ``K = de/dz`` the hidden errors' Jacobian, against ``K`` by autodiff
    (float64, 1e-12): closed form (backward then forward substitution) for W f(z) MLPs, with
    held activities an identity on them and ``(K_ff^T K_ff)^{-1}`` on the free ones; linearised
    autodiff for f(W z) nets."""
    from pclandscape.activity_hessian import error_preconditioner

    if kind == "residual mupc tanh":
        net = _residual_net("tanh")
    elif kind == "sp relu pieces held":
        net = pcl.MLP(jax.random.key(7), [4, 5, 3, 4, 3], "relu", dtype=jnp.float64)
    else:
        net = pcl.MLP(jax.random.key(7), [4, 5, 3, 4, 3], "tanh", prediction="f(W z)", dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (3, 3), jnp.float64)
    z = tuple(a + 0.3 * jax.random.normal(jax.random.key(i), a.shape, jnp.float64)
              for i, a in enumerate(net.feedforward(x)[:-1]))
    slopes = fixed = None
    if kind == "sp relu pieces held":  # the pieces z lies on, and some activities held
        slopes = [(a > 0).astype(jnp.float64) for a in z]
        fixed = [jax.random.bernoulli(jax.random.key(20 + i), 0.3, a.shape) for i, a in enumerate(z)]
    prec = error_preconditioner(net, z, x, y, slopes=slopes, fixed=fixed)
    for i in range(3):
        k = _error_jacobian(net, z, x, i)
        p = _dense_map(prec, z, i)
        if fixed is None:
            np.testing.assert_allclose(p @ (k.T @ k), np.eye(k.shape[0]), atol=1e-12)
        else:
            held = np.concatenate([np.asarray(f[i]) for f in fixed])
            assert 0 < held.sum() < held.size
            free = ~held
            kff = k[np.ix_(free, free)]
            np.testing.assert_allclose(p[np.ix_(free, free)] @ (kff.T @ kff), np.eye(free.sum()), atol=1e-12)
            np.testing.assert_allclose(p[np.ix_(held, held)], np.eye(held.sum()), atol=0)
            np.testing.assert_allclose(p[np.ix_(free, held)], 0.0, atol=0)
            np.testing.assert_allclose(p[np.ix_(held, free)], 0.0, atol=0)


def test_cg_returns_its_first_direction_at_negative_curvature(x64):
    """Per sample: where the first (preconditioned) direction ``M^{-1} b`` has negative
    curvature, CG returns that direction (a descent direction for Newton) instead of zero;
    a sample with positive curvature is solved exactly (diagonal systems, so by hand)."""
    from pclandscape._linalg import per_sample_cg

    a = jnp.array([[-2.0, 1.0], [-2.0, 1.0]])
    b = (jnp.array([[1.0, 0.5], [0.0, 1.0]]),)
    matvec = lambda v: (a * v[0],)  # noqa: E731
    x = per_sample_cg(matvec, b, 1e-12, 10, lambda r: (0.5 * r[0],))[0]
    # sample 0: p = (0.5, 0.25), p.Ap = -0.4375 < 0; sample 1: p = (0, 0.5), p.Ap = 0.25 > 0, x = A^-1 b
    np.testing.assert_allclose(np.asarray(x), [[0.5, 0.25], [0.0, 1.0]], rtol=0, atol=1e-15)
    x = per_sample_cg(matvec, b, 1e-12, 10)[0]  # unpreconditioned: the first direction is b
    np.testing.assert_allclose(np.asarray(x), [[1.0, 0.5], [0.0, 1.0]], rtol=0, atol=1e-15)


def test_preconditioned_cg_solves_a_deep_linear_net_in_dy_plus_one_products(x64):
    """On a linear net the activity Hessian is ``K^T K + p G^T G`` with ``G`` of rank ``d_y``, so
    in the error coordinates it is the identity plus a rank-``d_y`` term: preconditioned CG
    solves the Newton system exactly in ``d_y + 1`` products at any depth (here 24 layers,
    ``d_y = 3``: 4 products, relative residual 1e-10), where plain CG after those 4 products is
    still far off."""
    from pclandscape._linalg import per_sample_cg
    from pclandscape.activity_hessian import (dense_activity_hessian, mlp_activity_hvp, mlp_error_preconditioner,
                                              per_sample_flat)

    net = _residual_net("linear", depth=24, width=6)
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (3, 3), jnp.float64)
    z = net.feedforward(x)[:-1]
    b = tuple(jax.random.normal(jax.random.key(10 + i), a.shape, jnp.float64) for i, a in enumerate(z))
    hvp = mlp_activity_hvp(net, z, x, y)
    exact = np.linalg.solve(np.asarray(dense_activity_hessian(net, z, x, y)), np.asarray(per_sample_flat(b))[..., None])[..., 0]

    def rel_error(sol):
        sol = np.asarray(per_sample_flat(sol))
        return np.max(np.linalg.norm(sol - exact, axis=1) / np.linalg.norm(exact, axis=1))

    pcg = per_sample_cg(hvp, b, 1e-14, 4, mlp_error_preconditioner(net, z, x, y))
    assert rel_error(pcg) <= 1e-9
    assert rel_error(per_sample_cg(hvp, b, 1e-14, 4)) >= 1e-2


@pytest.mark.parametrize("act, linear_solve, depth", [("tanh", "block", 16), ("tanh", "cg", 32), ("relu", "block", 16)])
def test_newton_reaches_a_verified_equilibrium_on_deep_residual_nets(x64, act, linear_solve, depth):
    """16- and 32-layer residual muPC nets: Newton (block-tridiagonal direct solve or CG, the
    kink iteration for ReLU) to a residual <= 1e-10 in float64, the residual recomputed here by
    autodiff (smooth nets) or as the min-norm subgradient (ReLU)."""
    net = _residual_net(act, depth=depth, width=8, precision=1.0)
    x = jax.random.normal(jax.random.key(3), (8, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(4), (8, 3), jnp.float64)
    eq = pcl.infer(net, x, y, pcl.Newton(tol=1e-10, max_steps=300, linear_solve=linear_solve))
    assert bool(eq.converged) and float(eq.grad_norm) <= 1e-10
    if act == "tanh":
        g = pcl.activity_grad(net, eq.activities, x, y)
        assert max(float(jnp.max(jnp.linalg.norm(a, axis=1))) for a in g) <= 1e-10
    else:
        r = pcl.stationarity_residual(net, eq.activities, x, y)
        assert max(float(jnp.max(jnp.linalg.norm(a, axis=1))) for a in r) <= 1e-10
    assert float(eq.energy) < float(pcl.mse_loss(net, x, y))  # below the feedforward energy
