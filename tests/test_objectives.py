"""Eq 1 and Eq 2 against values computed by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl


def _hand_net(activation):
    # W_1 = [[1, 2]], W_2 = [[3]]: one hidden unit
    return pcl.MLP.from_weights([jnp.array([[1.0, 2.0]]), jnp.array([[3.0]])], activation)


def test_energy_of_hand_built_linear_net(x64):
    net = _hand_net("linear")
    x = jnp.array([[1.0, 1.0], [0.0, 2.0]])
    y = jnp.array([[2.0], [1.0]])
    z1 = jnp.array([[0.5], [1.0]])
    # sample 1: e1 = 0.5 - 3 = -2.5, e2 = 2 - 1.5 = 0.5  -> 6.25 + 0.25 = 6.5
    # sample 2: e1 = 1.0 - 4 = -3.0, e2 = 1 - 3.0 = -2.0 -> 9 + 4 = 13
    # F = 1/(2N) * (6.5 + 13) = 19.5 / 4
    assert float(pcl.pc_energy(net, [z1], x, y)) == pytest.approx(19.5 / 4, rel=1e-15)
    np.testing.assert_allclose(pcl.layer_energies(net, [z1], x, y), [(6.25 + 9) / 4, (0.25 + 4) / 4], rtol=1e-15)
    np.testing.assert_allclose(pcl.sample_energies(net, [z1], x, y), [3.25, 6.5], rtol=1e-15)
    # loss: outputs 9 and 12 -> (2-9)^2 + (1-12)^2 = 49 + 121 = 170 -> 170 / 4
    assert float(pcl.mse_loss(net, x, y)) == pytest.approx(170 / 4, rel=1e-15)


def test_energy_of_hand_built_tanh_net(x64):
    net = _hand_net("tanh")
    x = jnp.array([[1.0, 1.0]])
    y = jnp.array([[2.0]])
    z1 = jnp.array([[0.5]])
    expected = 0.5 * ((0.5 - 3.0) ** 2 + (2.0 - 3.0 * np.tanh(0.5)) ** 2)
    assert float(pcl.pc_energy(net, [z1], x, y)) == pytest.approx(expected, rel=1e-15)
    # the first layer is not passed through f; the output is W_2 tanh(z_1) at the feedforward pass
    assert float(pcl.mse_loss(net, x, y)) == pytest.approx(0.5 * (2 - 3 * np.tanh(3.0)) ** 2, rel=1e-15)


def test_energy_equals_loss_at_feedforward_pass(x64, rng):
    for act in ("linear", "tanh", "relu"):
        net = pcl.MLP(None, [3, 4, 5, 2], act, init="zeros").with_weights(
            [jnp.asarray(rng.standard_normal(s)) for s in [(4, 3), (5, 4), (2, 5)]]
        )
        x, y = jnp.asarray(rng.standard_normal((7, 3))), jnp.asarray(rng.standard_normal((7, 2)))
        ff = net.feedforward(x)[:-1]
        e = pcl.layer_energies(net, ff, x, y)
        np.testing.assert_allclose(e[:-1], 0.0, atol=1e-30)
        assert float(e[-1]) == pytest.approx(float(pcl.mse_loss(net, x, y)), rel=1e-14)


def test_biases_enter_the_prediction(x64):
    net = pcl.MLP.from_weights([jnp.eye(2), jnp.eye(2)], "linear", biases=[jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])])
    x = jnp.zeros((1, 2))
    np.testing.assert_allclose(net(x), [[1.0, 2.0]])
