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
    with pytest.raises(ValueError, match=r"activities\[0\] has shape \(2, 5\) but hidden layer 1 .* shape \(2, 4\)"):
        pcl.infer(net, x, y, init=[jnp.ones((2, 5))])
    with pytest.raises(ValueError, match=r"activities\[0\] has shape \(2, 5\)"):
        pcl.verify_equilibrium(net, x, y, [jnp.ones((2, 5))], tol=1e-5)
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


@pytest.mark.parametrize("make, match", [
    (lambda: pcl.Euler(dt="a"), r"Euler\(dt='a'\) must be a positive finite number"),
    (lambda: pcl.Euler(steps=2.5), r"Euler\(steps=2.5\) must be a positive integer"),
    (lambda: pcl.Euler(dt=0.0), r"Euler\(dt=0.0\) must be a positive"),
    (lambda: pcl.Euler(dt=float("nan")), r"Euler\(dt=nan\)"),
    (lambda: pcl.Euler(steps=0), r"Euler\(steps=0\) must be a positive integer"),
    (lambda: pcl.Heun(dt0=-1.0), r"Heun\(dt0=-1.0\)"),
    (lambda: pcl.Heun(max_steps=0), r"Heun\(max_steps=0\)"),
    (lambda: pcl.Newton(tol=-1.0), r"Newton\(tol=-1.0\)"),
    (lambda: pcl.CG(max_steps=1.5), r"CG\(max_steps=1.5\)"),
    (lambda: pcl.Newton(linear_solve="lu"), r"pcl.CG\(max_steps=...\) or pcl.BlockTridiagonal\(\)"),
    (lambda: pcl.ExactLinear(tol=0.0), r"ExactLinear\(tol=0.0\)"),
    (lambda: pcl.MLP(jax.random.key(0), [5, 2.5, 3]), r"2.5 is not an integer"),
    (lambda: pcl.MLP(jax.random.key(0), "543"), r"widths must be a sequence of positive integers.*'543'"),
    (lambda: pcl.MLP(jax.random.key(0), [5, 4, 3], init_std=float("nan")), r"MLP\(init_std=nan\) must be a finite number >= 0"),
    (lambda: pcl.MLP(jax.random.key(0), [5, 4, 3], init_std=-0.1), r"MLP\(init_std=-0.1\)"),
])
def test_settings_are_validated_at_construction(make, match):
    """Issue case 11: bad solver settings and network shapes used to pass (or fail inside JAX)."""
    with pytest.raises(ValueError, match=match):
        make()


def test_empty_batches_and_bad_batch_sizes():
    """Issue case 11: an empty batch or batch_size=0 gave ZeroDivisionError from inside JAX."""
    net = pcl.MLP(jax.random.key(0), [5, 4, 3], "tanh", init_std=0.1)
    empty = (jnp.zeros((0, 5)), jnp.zeros((0, 3)))
    with pytest.raises(ValueError, match="x holds no samples"):
        pcl.infer(net, *empty)
    with pytest.raises(ValueError, match="x holds no samples"):
        pcl.train(net, empty, steps=2)
    data = (jnp.ones((8, 5)), jnp.ones((8, 3)))
    for bs in (0, 2.5, -1):
        with pytest.raises(ValueError, match=rf"train\(batch_size={bs}\) must be a positive integer"):
            pcl.train(net, data, steps=2, batch_size=bs)
    with pytest.raises(ValueError, match=r"train\(eval_every=0\)"):
        pcl.train(net, data, steps=2, batch_size=4, eval_data=data, eval_every=0)
    nets = eqx_vmap_nets()
    with pytest.raises(ValueError, match=r"train_many\(batch_size=0\)"):
        pcl.train_many(nets, data, steps=2, batch_size=0)


def eqx_vmap_nets():
    import equinox as eqx

    return eqx.filter_vmap(lambda k: pcl.MLP(k, [5, 4, 3], "tanh", init_std=0.1))(jax.random.split(jax.random.key(0), 2))


def test_data_of_the_wrong_form_is_named_in_the_message():
    """A single array, an iterable yielding non-pairs, and targets of the wrong width (whose
    message named the shape of one cut batch, (1, 4), not the data's)."""
    net = pcl.MLP(jax.random.key(0), [4, 5, 3], "tanh", init_std=0.1)
    x, y = jnp.ones((6, 4)), jnp.ones((6, 3))
    with pytest.raises(ValueError, match=r"data is a single array of shape \(6, 4\); pass a pair \(x, y\)"):
        pcl.train(net, x, steps=2, batch_size=3)
    with pytest.raises(ValueError, match=r"data yielded an array of shape \(6, 4\) as batch 0; .* pairs \(x, y\)"):
        pcl.train(net, [x, y, x], steps=2, batch_size=3)
    with pytest.raises(ValueError, match=r"data yielded a tuple of 3 items as batch 1"):
        pcl.train(net, [(x, y), (x, y, y)], rule="bp", steps=2, batch_size=3)
    for steps_per_call in (1, 32):  # the per-step loop and the fused one
        with pytest.raises(ValueError, match=r"y has shape \(6, 4\) but the network's output width is 3"):
            pcl.train(net, (x, jnp.ones((6, 4))), steps=2, batch_size=3, steps_per_call=steps_per_call)


def test_objectives_must_be_scalar_and_tolerances_positive():
    """``classify_critical_point`` and the other tools of a scalar objective name a vector
    output instead of failing inside ``jax.grad``; bad tolerances are refused."""
    with pytest.raises(ValueError, match=r"fn returned an array of shape \(3,\), not a scalar"):
        pcl.classify_critical_point(lambda p: p * 2, jnp.ones(3))
    with pytest.raises(ValueError, match=r"fn returned an array of shape \(2, 3\)"):
        pcl.hessian(lambda p: jnp.outer(p[:2], p), jnp.ones(3))
    with pytest.raises(ValueError, match=r"classify_critical_point\(tol=-1\) must be a positive"):
        pcl.classify_critical_point(lambda p: jnp.sum(p**2), jnp.ones(3), tol=-1)
    with pytest.raises(ValueError, match=r"classify_critical_point\(k=0\)"):
        pcl.classify_critical_point(lambda p: jnp.sum(p**2), jnp.ones(3), k=0)
    with pytest.raises(ValueError, match=r"find_critical_point\(tol=0\)"):
        pcl.find_critical_point(lambda p: jnp.sum(p**2), jnp.ones(3), tol=0)
    with pytest.raises(ValueError, match=r"find_critical_point\(xtol=-1"):
        pcl.find_critical_point(lambda p: jnp.sum(p**2), jnp.ones(3), xtol=-1)


def test_a_float64_operator_used_with_x64_off_is_named():
    """An operator built inside ``jax.enable_x64(True)`` and used after the block ends would
    meet float32 vectors deep inside ``jax.jvp``; it is refused with what to do instead."""
    with jax.enable_x64(True):
        op = pcl.hessian_operator(lambda p: jnp.sum(p**4), jnp.ones(3, jnp.float64))
        assert float(pcl.lanczos(op, k=1).eigenvalues[0]) == pytest.approx(12.0, rel=1e-10)
    for use in (lambda: pcl.lanczos(op, k=1), lambda: op.mv(jnp.ones(3)), lambda: op.as_matrix()):
        with pytest.raises(ValueError, match=r"built in float64 .* inside the same `with jax.enable_x64\(True\):`"):
            use()


def test_a_dense_hessian_too_large_for_memory_is_refused_before_any_work():
    """p = 1,001,000 weights: a dense Hessian of 4 TB in float32 (8 TB to build), more than any
    machine this runs on. Refused up front with the matrix-free route named, not an
    out-of-memory error from deep inside XLA; the operator itself stays usable."""
    net = pcl.MLP(jax.random.key(0), [1000, 1000, 1], "linear")
    x, y = jnp.ones((2, 1000)), jnp.ones((2, 1))
    op = pcl.loss_hessian_operator(net, x, y)
    match = r"1,001,000 x 1,001,000 matrix \(4,008\.0 GB in float32\); building it needs at least 8,016\.0 GB.*matrix-free"
    for build in (lambda: pcl.loss_hessian(net, x, y), lambda: pcl.energy_hessian(net, x, y), op.as_matrix):
        with pytest.raises(MemoryError, match=match):
            build()
    v = jnp.zeros(op.size).at[0].set(1.0)
    assert op.mv(v).shape == (1_001_000,)
