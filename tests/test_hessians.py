"""Hessians of the equilibrated energy: implicit (any net), unrolled, theory; first-layer reduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from conftest import random_linear_problem


@pytest.mark.parametrize("widths", [[4, 3, 2], [5, 4, 3, 2], [3, 3, 4, 3, 2]])
def test_implicit_and_unrolled_equal_theory_at_random_theta(x64, widths):
    rng = np.random.default_rng(len(widths))
    ws, x, y = random_linear_problem(rng, widths, n=7)
    x, y = jnp.asarray(x), jnp.asarray(y)
    net = pcl.MLP.from_weights(ws)
    h_t = pcl.energy_hessian(net, x, y, pcl.Theory())
    h_i = pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear()))
    assert float(jnp.max(jnp.abs(h_i - h_t))) <= 1e-10
    # unrolled Euler: exact only in the limit of many steps
    h_u = pcl.energy_hessian(net, x, y, pcl.Unrolled(solver=pcl.Euler(dt=0.25, steps=1500)))
    assert float(jnp.max(jnp.abs(h_u - h_t))) <= 1e-8
    # the paper's T=50, dt=0.1 is visibly not converged
    h_50 = pcl.energy_hessian(net, x, y, pcl.Unrolled(solver=pcl.Euler(dt=0.1, steps=50)))
    assert float(jnp.max(jnp.abs(h_50 - h_t))) > 1e-6


def test_implicit_equals_finite_differences_of_numerical_F_star_for_tanh(x64):
    rng = np.random.default_rng(3)
    ws, x, y = random_linear_problem(rng, [3, 3, 2, 2], n=4, scale=1.2)
    x, y = jnp.asarray(x), jnp.asarray(y)
    net = pcl.MLP.from_weights(ws, "tanh")
    solver = pcl.Euler(dt=0.2, steps=3000, tol=1e-13)
    h = pcl.energy_hessian(net, x, y, pcl.Implicit(solver=solver, tol=1e-13))
    flat, unravel = jax.flatten_util.ravel_pytree(ws)
    f_star = jax.jit(jax.vmap(lambda v: pcl.infer(net.with_weights(unravel(v)), x, y, solver).energy))
    p, eps = flat.size, 1e-3
    e = jnp.eye(p) * eps
    i, j = np.triu_indices(p)
    pts = jnp.concatenate([flat + e[i] + e[j], flat + e[i] - e[j], flat - e[i] + e[j], flat - e[i] - e[j]])
    vals = f_star(pts).reshape(4, -1)
    fd_upper = (vals[0] - vals[1] - vals[2] + vals[3]) / (4 * eps**2)
    fd = jnp.zeros((p, p)).at[i, j].set(fd_upper).at[j, i].set(fd_upper)
    assert float(jnp.max(jnp.abs(h - fd))) <= 1e-5 * float(jnp.max(jnp.abs(h)))
    # and the implicit correction matters: F_tt alone (z held fixed) is different
    z = pcl.infer(net, x, y, solver).activities
    f_tt = pcl.hessian(lambda w: pcl.pc_energy(net.with_weights(w), z, x, y), ws)
    assert float(jnp.max(jnp.abs(f_tt - h))) > 1e-2


def test_first_layer_reduction_and_cg_give_the_same_hessian(x64):
    rng = np.random.default_rng(4)
    ws, x, y = random_linear_problem(rng, [9, 4, 3, 2], n=5)  # N = 5 < d_x = 9
    x, y = jnp.asarray(x), jnp.asarray(y)
    for act in ("linear", "tanh"):
        net = pcl.MLP.from_weights(ws, act)
        solver = pcl.Euler(dt=0.3, steps=2000, tol=1e-12)
        h_red = pcl.energy_hessian(net, x, y, pcl.Implicit(solver=solver))
        h_full = pcl.energy_hessian(net, x, y, pcl.Implicit(solver=solver, linear_solve="cg"), reduce_first_layer=False)
        assert float(jnp.max(jnp.abs(h_red - h_full))) <= 1e-11
        l_red = pcl.loss_hessian(net, x, y)
        l_ref = pcl.hessian(lambda w: pcl.mse_loss(net.with_weights(w), x, y), ws)
        assert float(jnp.max(jnp.abs(l_red - l_ref))) <= 1e-12
        op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=solver))
        v = jnp.asarray(rng.standard_normal(op.size))
        np.testing.assert_allclose(op.mv(v), h_red @ v, atol=1e-11)


def test_implicit_refuses_a_point_away_from_equilibrium(x64, rng):
    ws, x, y = random_linear_problem(rng, [3, 4, 2], n=4)
    net = pcl.MLP.from_weights(ws, "tanh")
    with pytest.raises(pcl.NotAtEquilibriumError, match="exceeds tol.*This solver: use more steps"):
        pcl.energy_hessian(net, jnp.asarray(x), jnp.asarray(y), pcl.Implicit(solver=pcl.Euler(dt=0.1, steps=3), tol=1e-8))
    with pytest.raises(ValueError, match=r"method=Theory\(\) needs a linear MLP"):
        pcl.energy_hessian(net, jnp.asarray(x), jnp.asarray(y), pcl.Theory())
    with pytest.raises(ValueError, match="method='newton' is not known"):
        pcl.energy_hessian(net, jnp.asarray(x), jnp.asarray(y), "newton")
    with pytest.raises(ValueError, match="belong to the method object"):
        pcl.energy_hessian(net, jnp.asarray(x), jnp.asarray(y), pcl.Implicit(), tol=1e-3)
    with pytest.raises(ValueError, match="Unrolled differentiates through Euler steps"):
        pcl.Unrolled(pcl.Newton())


def test_method_names_and_form_remain_as_shorthands(x64, rng):
    """The names with solver=/tol= beside them are the method objects; form='operator' is
    deprecated and gives energy_hessian_operator's operator."""
    ws, x, y = random_linear_problem(rng, [3, 4, 2], n=4)
    net = pcl.MLP.from_weights(ws, "linear")
    x, y = jnp.asarray(x), jnp.asarray(y)
    np.testing.assert_array_equal(pcl.energy_hessian(net, x, y, "implicit", solver=pcl.ExactLinear()),
                                  pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear())))
    np.testing.assert_array_equal(pcl.energy_hessian(net, x, y, "theory"), pcl.energy_hessian(net, x, y, pcl.Theory()))
    with pytest.warns(DeprecationWarning, match="energy_hessian_operator"):
        op = pcl.energy_hessian(net, x, y, "theory", form="operator")
    v = jnp.asarray(rng.standard_normal(op.size))
    np.testing.assert_allclose(op.mv(v), pcl.energy_hessian_operator(net, x, y, pcl.Theory()).mv(v), rtol=1e-14)
    with pytest.warns(DeprecationWarning, match="loss_hessian_operator"):
        pcl.loss_hessian(net, x, y, form="operator")


def test_implicit_operator_on_a_cnn_is_symmetric(x64):
    net = pcl.CNN(jax.random.key(0), "tanh", channels=(2, 2, 2), hidden=4, n_classes=3, in_shape=(1, 8, 8), init_std=0.5)
    x = jax.random.normal(jax.random.key(1), (2, 1, 8, 8))
    y = jax.nn.one_hot(jnp.array([0, 2]), 3)
    op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=pcl.Euler(dt=0.2, steps=1500, tol=1e-10)))
    u, v = jax.random.normal(jax.random.key(2), (2, op.size))
    assert float(u @ op.mv(v)) == pytest.approx(float(v @ op.mv(u)), rel=1e-9)
    # H v is the derivative of the envelope gradient dF/dtheta|_{z*(theta)} along v
    flat, unravel = jax.flatten_util.ravel_pytree(pcl.weights(net))
    solver = pcl.Euler(dt=0.2, steps=1500, tol=1e-10)

    @jax.jit
    def grad_at(th):
        n = net.with_weights(unravel(th))
        z = pcl.infer(n, x, y, solver).activities
        return jax.flatten_util.ravel_pytree(jax.grad(lambda w: pcl.pc_energy(n.with_weights(w), z, x, y))(pcl.weights(n)))[0]

    eps = 1e-5
    fd = (grad_at(flat + eps * v) - grad_at(flat - eps * v)) / (2 * eps)
    np.testing.assert_allclose(op.mv(v), fd, atol=1e-6 * float(jnp.max(jnp.abs(fd))))


@pytest.mark.parametrize("rank", [0, 1, 3, 6])
def test_first_layer_expansion_equals_the_chain_rule(x64, rank):
    """expand(H_red) = J^T H_red J for U = X W_1^T, on both of its paths (Kronecker sums for a
    low-rank set of per-sample blocks, one matrix product otherwise)."""
    from pclandscape.hessians._coords import KRON_MAX_RANK, expand

    rng = np.random.default_rng(rank)
    n, d_x, n1, r = 6, 5, 3, 4
    x = rng.standard_normal((n, d_x))
    basis = rng.standard_normal((max(rank, 1), n1, n1))
    blocks = np.einsum("ik,kac->iac", rng.standard_normal((n, max(rank, 1))) * (rank > 0), basis)
    blocks = blocks + blocks.transpose(0, 2, 1)
    h = np.zeros((n * n1 + r, n * n1 + r))
    for i in range(n):
        h[i * n1:(i + 1) * n1, i * n1:(i + 1) * n1] = blocks[i]
    side = rng.standard_normal((n * n1, r))
    h[: n * n1, n * n1:], h[n * n1:, : n * n1] = side, side.T
    h[n * n1:, n * n1:] = np.eye(r)
    jac = np.zeros((n * n1 + r, n1 * d_x + r))
    for i in range(n):
        for a in range(n1):
            jac[i * n1 + a, a * d_x:(a + 1) * d_x] = x[i]
    jac[n * n1:, n1 * d_x:] = np.eye(r)
    expected = jac.T @ h @ jac
    got = np.asarray(expand(jnp.asarray(h), jnp.asarray(x), n1))
    assert np.max(np.abs(got - expected)) <= 1e-12 * max(1.0, np.max(np.abs(expected)))
    assert (rank <= KRON_MAX_RANK) == (rank in (0, 1, 3))  # both paths are exercised


def test_hessians_refuse_non_finite_weights_and_inputs():
    """Issue 12 (non-finite points): a NaN matrix was returned silently."""
    net = pcl.MLP(jax.random.key(0), [2, 3, 2], "linear", init_std=0.5)
    x, y = jnp.ones((4, 2)), jnp.ones((4, 2))
    bad = net.with_weights([pcl.weights(net)[0].at[0, 0].set(jnp.nan), pcl.weights(net)[1]])
    for fn in (pcl.loss_hessian, lambda n, a, b: pcl.energy_hessian(n, a, b, pcl.Implicit())):
        with pytest.raises(ValueError, match="the weights hold NaN or inf"):
            fn(bad, x, y)
    with pytest.raises(ValueError, match="the inputs x hold NaN or inf"):
        pcl.loss_hessian(net, x.at[0, 0].set(jnp.inf), y)
