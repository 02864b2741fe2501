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


def test_find_critical_point_lands_on_known_saddles(x64):
    # an indefinite quadratic: the only critical point is -A^{-1} b, reached by one Newton step
    a = jnp.diag(jnp.asarray([3.0, -2.0, 0.5, -0.25]))
    b = jnp.asarray([1.0, 2.0, -1.0, 0.5])
    quad = lambda w: 0.5 * w @ a @ w + b @ w  # noqa: E731
    r = pcl.find_critical_point(quad, jnp.zeros(4))
    np.testing.assert_allclose(np.asarray(r.params), -np.asarray(b) / np.diag(np.asarray(a)), rtol=1e-12)
    assert r.converged and r.iterations == 1
    # (x^2 - 1)^2 - y^2 has critical points (0, 0) and (+-1, 0): the saddles (+-1, 0) (f_yy = -2)
    f = lambda p: (p["x"] ** 2 - 1) ** 2 - p["y"] ** 2  # noqa: E731
    r = pcl.find_critical_point(f, {"x": jnp.asarray(0.9), "y": jnp.asarray(0.1)})
    assert abs(float(r.params["x"]) - 1.0) < 1e-12 and abs(float(r.params["y"])) < 1e-12
    assert r.grad_norm <= 1e-10 and r.start_grad_norm > 0.5
    assert pcl.classify_critical_point(f, r.params).kind == "strict_saddle"


def test_find_critical_point_on_a_deep_linear_loss(x64):
    """Near a plateau of a deep linear net the search ends where an independent gradient vanishes."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (20, 5))
    y = x @ jax.random.normal(jax.random.key(1), (5, 4))
    net = pcl.MLP(key, [5, 6, 6, 4], "linear", init_std=1e-2, dtype=jnp.float64)
    fn = lambda w: pcl.mse_loss(net.with_weights(w), x, y)  # noqa: E731
    r = pcl.find_critical_point(fn, pcl.weights(net))
    assert r.converged and r.grad_norm <= 1e-10 < r.start_grad_norm
    g = jax.grad(lambda ws: pcl.mse_loss(pcl.MLP.from_weights(ws), x, y))(list(r.params))
    assert float(jnp.sqrt(sum(jnp.sum(gi**2) for gi in g))) <= 1e-10
    with pytest.raises(ValueError, match="NaN"):
        pcl.find_critical_point(fn, [w * jnp.nan for w in pcl.weights(net)])


@pytest.mark.parametrize("hidden", [2, 3])
def test_find_critical_point_reaches_the_degenerate_origin_saddle(x64, hidden):
    """At the origin of a deep linear loss the gradient has degree H in the weights and the
    Hessian vanishes (H >= 2): plain Newton removes 1/H of the distance per step and stops at
    ||g|| <= 1e-10 some 1e-6 to 1e-4 away, where the Hessian's O(distance^(H-1)) eigenvalues
    made this saddle look strict. The search must land on the origin itself, and the point it
    returns must classify as the origin does: a non-strict saddle of order H + 1 (Theorem 2)."""
    toy = pcl.data.toy_gaussian(dim=3, n_train=256)
    x, y = jnp.asarray(toy.x_train, jnp.float64), jnp.asarray(toy.y_train, jnp.float64)
    net = pcl.MLP(jax.random.key(0), [3] * (hidden + 2), "linear", init_std=0.1, dtype=jnp.float64)
    fn = lambda w: pcl.mse_loss(net.with_weights(w), x, y)  # noqa: E731
    r = pcl.find_critical_point(fn, pcl.weights(net))
    flat = np.concatenate([np.ravel(w) for w in r.params])
    assert r.converged and r.grad_norm <= 1e-10 and r.step_norm <= 1e-10
    assert np.abs(flat).max() <= 1e-9 < r.distance
    cp = pcl.classify_critical_point(fn, r.params)
    assert cp.kind == "non_strict_saddle" and cp.order == hidden + 1


def test_lanczos_counts_are_exact_or_none_never_wrong(x64):
    """Issue case 3: above dense_max, n_negative / n_zero are exact when the k computed
    eigenvalues reach past them and None (not a wrong count) when they do not."""
    def quadratic(d):
        d = jnp.asarray(d)
        return lambda v: 0.5 * jnp.sum(d * v**2)

    few = np.concatenate([[-1.0, -1.0, -1.0, 0.0, 0.0], np.linspace(2, 6, 295)])
    cp = pcl.classify_critical_point(quadratic(few), jnp.zeros(300), dense_max=10, k=8)
    assert (cp.kind, cp.n_negative, cp.n_zero) == ("strict_saddle", 3, 2)
    many = np.concatenate([-np.ones(90), np.zeros(60), np.linspace(2, 6, 150)])
    np.random.default_rng(1).shuffle(many)
    cp = pcl.classify_critical_point(quadratic(many), jnp.zeros(300), dense_max=10, k=8)
    assert (cp.kind, cp.n_negative, cp.n_zero) == ("strict_saddle", None, None)
    assert cp.lambda_min == pytest.approx(-1.0, abs=1e-12)
    dense = pcl.classify_critical_point(quadratic(many), jnp.zeros(300))
    assert (dense.n_negative, dense.n_zero) == (90, 60)
    # mostly negative: all non-negative eigenvalues are among the k largest
    neg = np.concatenate([-np.linspace(1, 2, 296), [0.0, 0.0, 3.0]])
    cp = pcl.classify_critical_point(quadratic(neg), jnp.zeros(299), dense_max=10, k=5)
    assert (cp.n_negative, cp.n_zero) == (296, 2)


@pytest.mark.parametrize("bad", ["params", "objective"])
def test_nan_points_have_no_kind(bad):
    """Issue case 4: NaN parameters gave "minimum", a NaN objective "non_strict_saddle"."""
    if bad == "params":
        fn, w = (lambda v: jnp.sum(v**2)), jnp.array([jnp.nan, 1.0])
    else:
        fn, w = (lambda v: jnp.sum(v**2) * jnp.nan), jnp.zeros(2)
    with pytest.raises(FloatingPointError, match="NaN or inf in the .* at this point, so it has no kind"):
        pcl.classify_critical_point(fn, w)


def _grad_max(fn, ws):
    return max(float(jnp.max(jnp.abs(g))) for g in jax.grad(fn)(ws))


@pytest.mark.parametrize("activation,prediction", [("linear", "W f(z)"), ("tanh", "W f(z)"), ("relu", "f(W z)")])
def test_two_zero_layers_are_an_exact_critical_point_of_the_loss(x64, rng, activation, prediction):
    """Any two zero layers of an MLP without biases or skips (f(0) = 0) zero every weight
    gradient of L exactly (products with exact zeros), and every one-sided directional
    derivative (finite differences, which also see ReLU's kinks); one zero layer does not."""
    widths = [3, 4, 4, 4, 2]
    x, y, _, _, _ = _setup(rng, widths)
    net = pcl.MLP(jax.random.key(1), widths, activation, init_std=0.7, prediction=prediction)
    loss = lambda w: pcl.mse_loss(net.with_weights(w), x, y)  # noqa: E731
    dirs = [[jnp.asarray(rng.standard_normal(w.shape)) for w in pcl.weights(net)] for _ in range(3)]
    t = 1e-6

    def slopes(ws):  # |L(w + t d) - L(w)| / t along random unit-ish directions
        return [abs(float(loss([a + t * b for a, b in zip(ws, d)]) - loss(ws))) / t for d in dirs]

    for pair in [(1, 2), (2, 4), (1, 4), (3, 4), (1, 3)]:
        point = pcl.zero_layers_critical_point(net, pair)
        assert point.layers == pair
        assert _grad_max(loss, pcl.weights(point.net)) == 0.0
        assert max(slopes(pcl.weights(point.net))) < 1e-4  # O(t): the change is second order
    one = [jnp.zeros_like(w) if i == 1 else w for i, w in enumerate(pcl.weights(net))]
    assert min(slopes(one)) > 1e-3  # (for ReLU, JAX's gradient there is 0: f'(0) = 0 at the kink)


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_zero_layers_of_F_star_and_the_loss_hessian_there(x64, rng, activation):
    """F* (its closed form, Theorem 1) is critical where the output layer is one of the two
    zeroed, not otherwise; with W_1 = W_L = 0 the loss Hessian's nonzero eigenvalues are
    +-(1/N) sigma_i(Y^T X) sigma_j(W_{L-1} ... W_2), for tanh too (f'(0) = 1, f''(0) = 0)."""
    widths = [3, 4, 5, 4, 2]
    x, y, _, _, energy = _setup(rng, widths, n=12)
    net = pcl.MLP(jax.random.key(2), widths, activation, init_std=0.8)
    if activation == "linear":
        assert _grad_max(energy, pcl.weights(pcl.zero_layers_critical_point(net, (1, 4)).net)) < 1e-13
        assert _grad_max(energy, pcl.weights(pcl.zero_layers_critical_point(net, (1, 3)).net)) > 1e-3
    at = pcl.zero_layers_critical_point(net, (4, 1)).net
    w = pcl.weights(at)
    eig = np.linalg.eigvalsh(np.asarray(pcl.loss_hessian(at, x, y)))
    s_xy = np.linalg.svd(np.asarray(y.T @ x), compute_uv=False)
    s_mid = np.linalg.svd(np.asarray(w[2] @ w[1]), compute_uv=False)
    prods = np.outer(s_xy, s_mid).ravel() / x.shape[0]
    prods = prods[prods > 1e-12]
    expected = np.sort(np.concatenate([-prods, prods]))
    nonzero = eig[np.abs(eig) > 1e-9]
    np.testing.assert_allclose(nonzero, expected, rtol=1e-10)
    cp = pcl.classify_critical_point(lambda v: pcl.mse_loss(at.with_weights(v), x, y), w)
    assert cp.kind == "strict_saddle" and cp.lambda_min == pytest.approx(-prods.max(), rel=1e-10)


def test_zero_layers_default_is_the_nearest_and_bad_input_is_refused(rng):
    net = pcl.MLP(jax.random.key(0), [3, 4, 4, 2], "tanh", init_std=0.5)
    ws = pcl.weights(net)
    ws = [ws[0] * 0.1, ws[1], ws[2] * 0.2]
    point = pcl.zero_layers_critical_point(net.with_weights(ws))
    assert point.layers == (1, 3)
    assert point.distance == pytest.approx(float(np.hypot(np.linalg.norm(ws[0]), np.linalg.norm(ws[2]))), rel=1e-6)
    with pytest.raises(ValueError, match="biases or skips"):
        pcl.zero_layers_critical_point(pcl.MLP(jax.random.key(0), [3, 4, 2], "tanh", use_bias=True))
    with pytest.raises(ValueError, match="biases or skips"):
        pcl.zero_layers_critical_point(pcl.MLP(jax.random.key(0), [3, 4, 4, 4, 2], "tanh", residual=True))
    with pytest.raises(ValueError, match=r"f\(0\) = 0"):
        pcl.zero_layers_critical_point(pcl.MLP(jax.random.key(0), [3, 4, 2], jax.nn.sigmoid))
    with pytest.raises(ValueError, match="two distinct layer indices in 1..3"):
        pcl.zero_layers_critical_point(net, (2, 2))
    with pytest.raises(ValueError, match="two distinct layer indices in 1..3"):
        pcl.zero_layers_critical_point(net, (0, 3))
