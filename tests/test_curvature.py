"""Dense Hessians, HVPs, spectra and Lanczos against exact linear algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from pclandscape._compat import enable_x64
from conftest import random_linear_problem


def test_hessian_and_hvp_of_a_known_function(x64, rng):
    a = rng.standard_normal((5, 5))
    a = jnp.asarray(a + a.T)
    params = {"u": jnp.asarray(rng.standard_normal(3)), "v": jnp.asarray(rng.standard_normal(2))}

    def fn(p):
        z = jnp.concatenate([p["u"], p["v"]])
        return 0.5 * z @ a @ z + jnp.sum(z**3) / 6

    flat = jnp.concatenate([params["u"], params["v"]])
    expected = a + jnp.diag(flat)
    h = pcl.hessian(fn, params)
    np.testing.assert_allclose(h, expected, atol=1e-13)
    v = jnp.asarray(rng.standard_normal(5))
    np.testing.assert_allclose(pcl.hvp(fn, params, v), expected @ v, atol=1e-13)
    tree = pcl.hvp(fn, params, {"u": v[:3], "v": v[3:]})
    np.testing.assert_allclose(tree["v"], (expected @ v)[3:], atol=1e-13)
    np.testing.assert_allclose(pcl.gradient(fn, params), a @ flat + flat**2 / 2, atol=1e-13)


def test_eigenspectrum_and_density(x64, rng):
    a = rng.standard_normal((6, 6))
    a = jnp.asarray(a @ a.T)
    spec = pcl.eigenspectrum(a)
    np.testing.assert_allclose(spec.eigenvectors @ jnp.diag(spec.eigenvalues) @ spec.eigenvectors.T, a, atol=1e-12)
    assert float(spec.lambda_min) == pytest.approx(float(np.linalg.eigvalsh(np.asarray(a))[0]), rel=1e-12)
    grid, dens = pcl.spectral_density(spec.eigenvalues, grid=2000)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def indefinite_problem():
    """The Hessian of the closed-form F* of a linear net at a random point: p = 2100, indefinite."""
    with enable_x64(True):
        rng = np.random.default_rng(7)
        ws, x, y = random_linear_problem(rng, [20, 30, 30, 20], n=32)
        ws = [jnp.asarray(w) for w in ws]
        x, y = jnp.asarray(x), jnp.asarray(y)
        fn = lambda w: pcl.theory.equilibrated_energy(w, x, y)
        h = pcl.hessian(fn, ws)
        yield fn, ws, np.linalg.eigvalsh(np.asarray(h))


def test_lanczos_extremes_match_eigvalsh_on_an_indefinite_hessian(x64, indefinite_problem):
    fn, ws, ev = indefinite_problem
    assert ev.size == 2100 and ev[0] < 0 < ev[-1]
    lo = pcl.lanczos(fn, ws, k=2, which="smallest")
    hi = pcl.lanczos(fn, ws, k=1, which="largest")
    assert lo.converged and hi.converged
    np.testing.assert_allclose(np.asarray(lo.eigenvalues), ev[:2], rtol=1e-6)
    assert float(hi.eigenvalues[0]) == pytest.approx(ev[-1], rel=1e-6)
    # Ritz vectors are eigenvectors
    v = lo.eigenvectors[:, 0]
    hv = pcl.hvp(fn, ws, v)
    assert float(jnp.linalg.norm(hv - lo.eigenvalues[0] * v)) <= 1e-5 * abs(ev[0])


def test_lanczos_on_a_definite_operator(x64):
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((2000, 2000)))
    ev = np.sort(np.concatenate([[0.5, 0.51], rng.uniform(1.0, 3.0, 1996), [7.0, 7.2]]))
    a = jnp.asarray((q * ev) @ q.T)
    fn = lambda v: 0.5 * v @ a @ v
    lo = pcl.lanczos(fn, jnp.zeros(2000), which="smallest")
    hi = pcl.lanczos(fn, jnp.zeros(2000), which="largest")
    assert float(lo.eigenvalues[0]) == pytest.approx(0.5, rel=1e-6)
    assert float(hi.eigenvalues[0]) == pytest.approx(7.2, rel=1e-6)


def test_lanczos_stops_on_an_invariant_subspace(x64):
    """A Hessian with 3 distinct eigenvalues: the Krylov space closes after 3 steps."""
    d = jnp.asarray(np.repeat([-2.0, 0.0, 5.0], 100))
    res = pcl.lanczos(lambda v: 0.5 * jnp.sum(d * v**2), jnp.zeros(300), k=1, which="smallest")
    assert res.iterations == 3 and res.converged
    assert float(res.eigenvalues[0]) == pytest.approx(-2.0, rel=1e-12)
    with pytest.raises(ValueError, match="which="):
        pcl.lanczos(lambda v: jnp.sum(v**2), jnp.zeros(3), which="middle")


@pytest.mark.parametrize("scale", [1.0, 1e-6])
def test_lanczos_eigenvalues_scale_with_the_operator_in_float32(scale):
    """lanczos(c H) = c lanczos(H), down to c = 1e-6 (float32): an invariant subspace is
    recognised relative to the operator's norm, as above, not against an absolute floor (which
    ended the Krylov space of the 1e-3-sized Hessians of wide muPC nets after one product and
    returned a random Rayleigh quotient as the extreme eigenvalue)."""
    d = jnp.linspace(-1.0, 2.0, 300, dtype=jnp.float32)
    f = lambda v: 0.5 * scale * jnp.sum(d * v**2)  # noqa: E731
    lo = pcl.lanczos(f, jnp.zeros(300, jnp.float32), k=1, which="smallest")
    hi = pcl.lanczos(f, jnp.zeros(300, jnp.float32), k=1, which="largest")
    assert lo.converged and hi.converged and lo.iterations > 3
    assert float(lo.eigenvalues[0]) == pytest.approx(-scale, rel=1e-4)
    assert float(hi.eigenvalues[0]) == pytest.approx(2 * scale, rel=1e-4)


def _diag_fn(d):
    d = jnp.asarray(d)
    return lambda v: 0.5 * jnp.sum(d * v**2)


def test_lanczos_counts_eigenvalues_with_multiplicity(x64):
    """Issue case 3: on diag(-1 x3, 0 x2, 2..6) single-vector Krylov gives [-1, 0, 2, 3, 4];
    the k smallest counted with multiplicity are [-1, -1, -1, 0, 0] (and so on)."""
    d = np.concatenate([[-1.0, -1.0, -1.0, 0.0, 0.0], np.arange(2.0, 7.0)])
    rng = np.random.default_rng(0)
    perm = rng.permutation(10)
    fn = _diag_fn(d[perm])
    lo = pcl.lanczos(fn, jnp.zeros(10), k=5, which="smallest")
    assert lo.converged
    np.testing.assert_allclose(np.asarray(lo.eigenvalues), [-1, -1, -1, 0, 0], atol=1e-10)
    lo8 = pcl.lanczos(fn, jnp.zeros(10), k=8, which="smallest")
    np.testing.assert_allclose(np.asarray(lo8.eigenvalues), [-1, -1, -1, 0, 0, 2, 3, 4], atol=1e-10)
    hi = pcl.lanczos(fn, jnp.zeros(10), k=4, which="largest")
    np.testing.assert_allclose(np.asarray(hi.eigenvalues), [6, 5, 4, 3], atol=1e-10)
    # the Ritz vectors of a repeated eigenvalue are orthonormal eigenvectors, not copies
    v = np.asarray(lo.eigenvectors)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(np.asarray(d[perm])[:, None] * v, v * np.asarray(lo.eigenvalues)[None], atol=1e-10)


def test_lanczos_with_a_small_basis_restarts_to_the_same_eigenvalues(x64):
    """max_basis bounds the Krylov basis (memory); runs that fill it restart from their Ritz
    vectors and still return eigvalsh's k smallest with multiplicity, spending more products."""
    d = np.concatenate([[-2.0, -1.0, -1.0], np.linspace(0.0, 1.0, 297)])  # a dense bulk: slow convergence
    np.random.default_rng(3).shuffle(d)
    fn = _diag_fn(d)
    full = pcl.lanczos(fn, jnp.zeros(300), k=3, which="smallest")
    small = pcl.lanczos(fn, jnp.zeros(300), k=3, which="smallest", max_basis=12, max_iter=4000)
    assert full.converged and small.converged
    np.testing.assert_allclose(np.asarray(small.eigenvalues), [-2, -1, -1], atol=1e-9)
    np.testing.assert_allclose(np.asarray(full.eigenvalues), [-2, -1, -1], atol=1e-9)
    assert small.iterations > full.iterations
    with pytest.raises(ValueError, match="max_basis"):
        pcl.lanczos(fn, jnp.zeros(300), max_basis=1)
    # out of products before anything converged: estimates with their residuals, never a crash
    bulk = _diag_fn(np.linspace(0.0, 1.0, 300))  # no gap: nothing converges in 4 products
    short = pcl.lanczos(bulk, jnp.zeros(300), k=2, which="smallest", max_iter=4)
    assert not short.converged and short.eigenvalues.shape == (2,) and float(short.residuals[0]) > 1e-3
    assert float(short.eigenvalues[0]) >= -1e-12  # a Ritz value never passes the end of the spectrum


def test_lanczos_multiplicity_far_above_k(x64):
    """90 copies of -1 and 60 zeros among 300: the 5 smallest are five -1s."""
    d = np.concatenate([-np.ones(90), np.zeros(60), np.linspace(2, 6, 150)])
    np.random.default_rng(1).shuffle(d)
    lo = pcl.lanczos(_diag_fn(d), jnp.zeros(300), k=5, which="smallest")
    assert lo.converged
    np.testing.assert_allclose(np.asarray(lo.eigenvalues), -np.ones(5), atol=1e-10)


def test_lanczos_on_the_degenerate_origin_hessian_of_a_linear_net(x64):
    """The loss Hessian of a one-hidden-layer linear net at the origin is [[0, B], [B^T, 0]] with
    Kronecker-structured B: every eigenvalue +-sigma_i of the data cross-covariance appears
    ``width`` times. Lanczos' k extreme eigenvalues must match eigvalsh with multiplicities."""
    rng = np.random.default_rng(3)
    x, y = jnp.asarray(rng.standard_normal((20, 3))), jnp.asarray(rng.standard_normal((20, 3)))
    net = pcl.MLP(jax.random.key(0), [3, 5, 3], "linear", init_std=0.0)
    fn = lambda ws: pcl.mse_loss(net.with_weights(ws), x, y)
    ws = pcl.weights(net)
    ev = np.linalg.eigvalsh(np.asarray(pcl.hessian(fn, ws)))
    assert np.sum(np.isclose(ev, ev[0], atol=1e-8)) == 5  # the smallest has multiplicity 5
    lo = pcl.lanczos(fn, ws, k=12, which="smallest")
    hi = pcl.lanczos(fn, ws, k=7, which="largest")
    np.testing.assert_allclose(np.asarray(lo.eigenvalues), ev[:12], atol=1e-9)
    np.testing.assert_allclose(np.asarray(hi.eigenvalues), ev[::-1][:7], atol=1e-9)
