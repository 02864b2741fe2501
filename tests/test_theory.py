"""The paper's closed forms (Eqs 6, 8, 62-65, Theorem 3) against autodiff, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from pclandscape import theory


def _data(rng, widths, n=12):
    return jnp.asarray(rng.standard_normal((n, widths[0]))), jnp.asarray(rng.standard_normal((n, widths[-1])))


def _zeros(widths):
    return [jnp.zeros((o, i)) for i, o in zip(widths[:-1], widths[1:])]


@pytest.mark.parametrize("n_hidden", [1, 2, 3, 5])
def test_eq6_and_eq8_equal_autodiff_hessians_at_origin(x64, n_hidden):
    rng = np.random.default_rng(10 + n_hidden)
    widths = [int(w) for w in rng.integers(2, 5, size=n_hidden + 2)]
    x, y = _data(rng, widths)
    ws = _zeros(widths)
    h_loss = pcl.hessian(lambda w: pcl.mse_loss(pcl.MLP.from_weights(w), x, y), ws)
    h_energy = pcl.hessian(lambda w: theory.equilibrated_energy(w, x, y), ws)
    eq6 = theory.loss_hessian_at_origin(widths, x, y)
    eq8 = theory.energy_hessian_at_origin(widths, x, y)
    assert float(jnp.max(jnp.abs(h_loss - eq6))) <= 1e-10
    assert float(jnp.max(jnp.abs(h_energy - eq8))) <= 1e-10
    assert float(jnp.max(jnp.abs(eq8))) > 0.1  # not trivially zero
    # Eq 8's last block is exactly -Sigma_yy (x) I in the row-major order (docs/conventions.md)
    k = widths[-1] * widths[-2]
    syy = y.T @ y / y.shape[0]
    np.testing.assert_array_equal(eq8[-k:, -k:], -jnp.kron(syy, jnp.eye(widths[-2])))


@pytest.mark.parametrize("n_hidden", [1, 2, 4])
def test_origin_spectra(x64, n_hidden):
    rng = np.random.default_rng(20 + n_hidden)
    widths = [3] + [4] * n_hidden + [3]
    x, y = _data(rng, widths)
    ev_l = jnp.linalg.eigvalsh(theory.loss_hessian_at_origin(widths, x, y))
    ev_f = jnp.linalg.eigvalsh(theory.energy_hessian_at_origin(widths, x, y))
    lam_syy = float(jnp.linalg.eigvalsh(y.T @ y / y.shape[0])[-1])
    assert float(ev_f[0]) < 0  # Theorem 2: strict saddle for every H
    if n_hidden >= 2:
        assert float(ev_f[0]) == pytest.approx(-lam_syy, rel=1e-12)
        assert float(jnp.min(ev_l)) == 0.0 and float(jnp.max(jnp.abs(ev_l))) == 0.0  # Eq 7
    else:
        assert float(ev_l[0]) < -1e-3
        # H_F* = H_L - (PSD) => every sorted eigenvalue is at or below the loss one (Weyl; Eq 64)
        assert bool(jnp.all(ev_f <= ev_l + 1e-12))


@pytest.mark.parametrize("n_hidden", [1, 2, 3])
def test_chain_hessians_and_eigenvalues(x64, n_hidden):
    rng = np.random.default_rng(30 + n_hidden)
    x = jnp.asarray(1.0 + np.sqrt(0.1) * rng.standard_normal((16, 1)))
    y = -x
    widths = [1] * (n_hidden + 2)
    h_l, h_f = theory.chain_hessians_at_origin(n_hidden, x, y)
    np.testing.assert_allclose(h_l, theory.loss_hessian_at_origin(widths, x, y), atol=1e-14)
    np.testing.assert_allclose(h_f, theory.energy_hessian_at_origin(widths, x, y), atol=1e-14)
    ev_l, ev_f = theory.chain_eigenvalues_at_origin(n_hidden, x, y)
    np.testing.assert_allclose(ev_l, jnp.linalg.eigvalsh(h_l), atol=1e-12)
    np.testing.assert_allclose(ev_f, jnp.linalg.eigvalsh(h_f), atol=1e-12)
    y2 = float(jnp.mean(y**2))
    if n_hidden == 1:
        xy = float(jnp.mean(x * y))
        np.testing.assert_allclose(ev_f, [(-y2 - np.sqrt(y2**2 + 4 * xy**2)) / 2, (-y2 + np.sqrt(y2**2 + 4 * xy**2)) / 2], rtol=1e-13)
        assert bool(jnp.all(ev_f < ev_l))  # Eq 64, strict
    else:
        assert float(ev_f[0]) == pytest.approx(-y2, rel=1e-13)  # Eq 65
        assert int(jnp.sum(jnp.abs(ev_f) < 1e-14)) == n_hidden  # L - 1 zeros


def test_single_sample_h1_eigenvalues_match_the_paper_formula(x64):
    x, y = jnp.array([[0.7]]), jnp.array([[-1.3]])
    _, ev_f = theory.chain_eigenvalues_at_origin(1, x, y)
    xv, yv = 0.7, -1.3
    paper = sorted([(-(yv**2) + s * abs(yv) * np.sqrt(4 * xv**2 + yv**2)) / 2 for s in (-1, 1)])
    np.testing.assert_allclose(ev_f, paper, rtol=1e-14)


@pytest.mark.parametrize(
    "widths,nonzero",
    [([3, 4, 5, 2], None), ([2, 3, 3, 4, 3], None), ([3, 4, 4, 4, 2], {1: None, 3: None}), ([3, 4, 3], {})],
)
def test_zero_rank_saddles_are_strict_with_the_predicted_curvature(x64, widths, nonzero):
    rng = np.random.default_rng(sum(widths))
    x, y = _data(rng, widths)
    s = theory.zero_rank_saddle(widths, x, y, nonzero=nonzero, key=jax.random.key(1), scale=0.8)
    f = lambda w: theory.equilibrated_energy(w, x, y)
    g = pcl.gradient(f, s.weights)
    assert float(jnp.max(jnp.abs(g))) <= 1e-12
    h = pcl.hessian(f, s.weights)
    d = jax.flatten_util.ravel_pytree(s.direction)[0]
    assert float(d @ h @ d) == pytest.approx(float(s.curvature), rel=1e-10)
    assert float(s.curvature) < 0
    assert float(jnp.linalg.eigvalsh(h)[0]) < 0
    # the numerical F* (exact inference) has the same vanishing gradient there
    net = pcl.MLP.from_weights(s.weights)
    z = pcl.infer(net, x, y, pcl.ExactLinear(method="activity")).activities
    g_pc = jax.grad(lambda w: pcl.pc_energy(net.with_weights(w), z, x, y))(s.weights)
    assert max(float(jnp.max(jnp.abs(a))) for a in g_pc) <= 1e-12


def test_zero_rank_saddle_rejects_points_outside_theorem3(x64, rng):
    x, y = _data(rng, [3, 4, 4, 2])
    with pytest.raises(ValueError, match="W_L must be 0"):
        theory.zero_rank_saddle([3, 4, 4, 2], x, y, nonzero={3: None}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="is not zero"):
        theory.zero_rank_saddle([3, 4, 4, 2], x, y, nonzero={1: None, 2: None}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="no hidden layer"):
        theory.loss_hessian_at_origin([3, 2], x, y[:, :2])


def test_rescaling_and_closed_form_match_the_definition(x64, rng):
    ws = [jnp.asarray(rng.standard_normal(s)) for s in [(4, 3), (5, 4), (2, 5)]]
    w1, w2, w3 = ws
    s_expected = jnp.eye(2) + (w3 @ w2) @ (w3 @ w2).T + w3 @ w3.T
    np.testing.assert_allclose(theory.rescaling(ws), s_expected, rtol=1e-13)
    x, y = jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal((5, 2)))
    r = y - x @ (w3 @ w2 @ w1).T
    expected = 0.5 * np.mean(np.einsum("ni,ij,nj->n", r, np.linalg.inv(s_expected), r))
    assert float(theory.equilibrated_energy(ws, x, y)) == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(theory.product(ws, 3, 2), w3 @ w2, rtol=1e-14)


@pytest.mark.parametrize("kind", ["paper linear H=3", "residual mupc tanh", "residual sp tanh p=2", "ntp tanh H=1",
                                  "plain mupc linear H=3"])
def test_network_origin_spectrum_equals_the_hessian_of_f_star(x64, kind):
    """network_origin_spectrum (closed form) against every eigenvalue of the dense Hessian of
    F* at W = 0 (implicit differentiation through the equilibrium, autodiff), to 1e-10; for the
    paper's nets also against origin_spectrum (Eq 8). A residual net keeps the W_1-W_L cross
    term at any depth: lambda_min <= -p a_1 a_L sigma_max(Sigma_xy) < 0."""
    rng = np.random.default_rng(7)
    cases = {
        "paper linear H=3": ([3, 4, 4, 4, 2], "linear", dict()),
        "residual mupc tanh": ([3, 4, 4, 4, 4, 2], "tanh", dict(residual=True, param=pcl.MuPC())),
        "residual sp tanh p=2": ([3, 4, 4, 4, 2], "tanh", dict(residual=True, output_precision=2.0)),
        "ntp tanh H=1": ([3, 5, 2], "tanh", dict(param=pcl.NTP(), output_precision=0.5)),
        "plain mupc linear H=3": ([3, 4, 4, 4, 2], "linear", dict(param=pcl.MuPC())),
    }
    widths, act, kw = cases[kind]
    net = pcl.MLP(None, widths, act, init="zeros", dtype=jnp.float64, **kw)
    x, y = _data(rng, widths)
    closed = theory.network_origin_spectrum(net, x, y)
    dense = pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.Newton(tol=1e-12)))
    ev = jnp.linalg.eigvalsh(dense)
    assert closed.shape == ev.shape and float(jnp.max(jnp.abs(ev))) > 1e-3  # not trivially zero
    np.testing.assert_allclose(np.asarray(closed), np.asarray(ev), rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(ev))))
    if kind == "paper linear H=3":
        np.testing.assert_allclose(np.asarray(closed), np.asarray(theory.origin_spectrum(widths, x, y)), atol=1e-12)
    if kw.get("residual"):
        a, p_out = net.scalings, net.output_precision
        sigma = float(jnp.linalg.svd(x.T @ y / x.shape[0], compute_uv=False)[0])
        assert float(closed[0]) <= -p_out * a[0] * a[-1] * sigma * (1 - 1e-12)


def test_network_origin_spectrum_refuses_what_its_derivation_does_not_cover():
    x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
    with pytest.raises(ValueError, match="f'\\(0\\) = 1"):
        theory.network_origin_spectrum(pcl.MLP(None, [3, 4, 2], "relu", init="zeros"), x, y)
    with pytest.raises(ValueError, match="without biases"):
        theory.network_origin_spectrum(pcl.MLP(None, [3, 4, 2], "tanh", init="zeros", use_bias=True), x, y)
    with pytest.raises(ValueError, match="predict"):
        theory.network_origin_spectrum(pcl.MLP(None, [3, 4, 2], "tanh", init="zeros", prediction="f(W z)"), x, y)
