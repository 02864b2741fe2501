"""Bad input gives a ValueError that names the argument and says what to do."""

import jax
import jax.numpy as jnp
import pytest

import pclandscape as pcl


def test_shape_mismatch_between_net_and_data():
    net = pcl.MLP(jax.random.key(0), [5, 4, 3])
    x, y = jnp.ones((2, 5)), jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"x has shape \(2, 6\).*\(N, 5\)"):
        pcl.mse_loss(net, jnp.ones((2, 6)), y)
    with pytest.raises(ValueError, match=r"y has shape \(2, 4\).*output width is 3"):
        pcl.infer(net, x, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="different batch sizes"):
        pcl.infer(net, x, jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="activities has 2 arrays.*1 hidden"):
        pcl.pc_energy(net, [jnp.ones((2, 4))] * 2, x, y)
    with pytest.raises(ValueError, match=r"x has shape"):
        pcl.train(net, (jnp.ones((8, 6)), jnp.ones((8, 3))), rule="bp", steps=1, batch_size=4)


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation='sigmoidd' is not known.*'relu'"):
        pcl.MLP(jax.random.key(0), [3, 2], "sigmoidd")


def test_fewer_than_two_widths():
    with pytest.raises(ValueError, match=r"widths=\[3\] has fewer than two entries"):
        pcl.MLP(jax.random.key(0), [3])


def test_exact_linear_on_nonlinear_net():
    net = pcl.MLP(jax.random.key(0), [3, 4, 2], "tanh")
    with pytest.raises(ValueError, match=r"solver=ExactLinear\(\) needs a linear MLP.*'tanh'.*pcl.Newton"):
        pcl.infer(net, jnp.ones((2, 3)), jnp.ones((2, 2)), pcl.ExactLinear())
    with pytest.raises(ValueError, match=r"solver=ExactLinear\(\)"):
        pcl.train(net, (jnp.ones((4, 3)), jnp.ones((4, 2))), rule="pc", solver=pcl.ExactLinear(), steps=1, batch_size=2)


def test_other_bad_arguments():
    net = pcl.MLP(jax.random.key(0), [3, 2])
    with pytest.raises(ValueError, match="rule='sgd' is not known"):
        pcl.train(net, (jnp.ones((4, 3)), jnp.ones((4, 2))), rule="sgd", steps=1)
    with pytest.raises(ValueError, match="batch_size=64 is larger than the data set"):
        pcl.train(net, (jnp.ones((4, 3)), jnp.ones((4, 2))), rule="bp", steps=1)
    with pytest.raises(ValueError, match="init_std"):
        pcl.MLP(jax.random.key(0), [3, 2], init="normal")
    with pytest.raises(ValueError, match="solver must be"):
        pcl.infer(net, jnp.ones((2, 3)), jnp.ones((2, 2)), solver="euler")
