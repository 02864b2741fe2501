"""BP and PC training: steps, the train loop, History, checkpoints, divergence."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclandscape as pcl


@pytest.fixture(scope="module")
def regression():
    """A learnable task: y = A x with a random 4x4 teacher, x ~ N(1, 0.1)."""
    kx, ka = jax.random.split(jax.random.key(3))
    x = 1.0 + jnp.sqrt(0.1) * jax.random.normal(kx, (256, 4))
    y = x @ (jax.random.normal(ka, (4, 4)) / 2).T
    return x, y


@pytest.mark.parametrize("rule", ["bp", "pc"])
def test_training_reduces_the_loss(regression, rule):
    x, y = regression
    net = pcl.MLP(jax.random.key(0), [4, 8, 8, 4], "tanh", init_std=0.3)
    solver = pcl.Euler(dt=0.1, steps=20) if rule == "pc" else None
    net2, hist = pcl.train(
        net, (x, y), rule=rule, optimizer=optax.sgd(0.05), solver=solver, steps=150, batch_size=32,
        key=jax.random.key(1), eval_data=(x, y), eval_every=50,
    )
    assert len(hist) == 150
    l0, l1 = float(pcl.mse_loss(net, x, y)), float(pcl.mse_loss(net2, x, y))
    assert l1 < 0.2 * l0
    assert list(hist.eval_step) == [0, 50, 100, 150]
    assert hist.test_loss[-1] == pytest.approx(l1, rel=1e-5)
    assert np.isnan(hist.test_accuracy).all()  # regression targets are not one-hot
    if rule == "pc":
        assert np.all(hist.energy <= hist.loss + 1e-6)  # Euler lowers F from its value L
    else:
        assert np.isnan(hist.energy).all()


def test_pc_step_on_linear_net_follows_the_gradient_of_F_star(x64):
    rng = np.random.default_rng(5)
    ws = [jnp.asarray(rng.standard_normal(s) / 2) for s in [(3, 4), (5, 3), (2, 5)]]
    x, y = jnp.asarray(rng.standard_normal((6, 4))), jnp.asarray(rng.standard_normal((6, 2)))
    net = pcl.MLP.from_weights(ws)
    lr = 0.1
    opt = optax.sgd(lr)
    new, _, info = pcl.pc_step(net, pcl.init_opt_state(net, opt), x, y, opt, pcl.ExactLinear())
    g = jax.grad(pcl.theory.equilibrated_energy)(tuple(ws), x, y)
    for w_new, w, gi in zip(pcl.weights(new), ws, g):
        np.testing.assert_allclose(w_new, w - lr * gi, atol=1e-12)
    assert float(info.energy) == pytest.approx(float(pcl.theory.equilibrated_energy(ws, x, y)), rel=1e-12)
    assert float(info.grad_norm) == pytest.approx(float(jnp.sqrt(sum(jnp.sum(gi**2) for gi in g))), rel=1e-12)
    # grad_scale multiplies the update
    new2, _, _ = pcl.pc_step(net, pcl.init_opt_state(net, opt), x, y, opt, pcl.ExactLinear(), grad_scale=3.0)
    np.testing.assert_allclose(pcl.weights(new2)[0], ws[0] - 3 * lr * g[0], atol=1e-12)


def test_bp_step_is_sgd_on_the_loss(x64):
    rng = np.random.default_rng(6)
    ws = [jnp.asarray(rng.standard_normal(s)) for s in [(3, 4), (2, 3)]]
    x, y = jnp.asarray(rng.standard_normal((6, 4))), jnp.asarray(rng.standard_normal((6, 2)))
    net = pcl.MLP.from_weights(ws, "tanh")
    opt = optax.sgd(0.1)
    new, _, info = pcl.bp_step(net, pcl.init_opt_state(net, opt), x, y, opt)
    g = jax.grad(lambda w: pcl.mse_loss(net.with_weights(w), x, y))(tuple(ws))
    for w_new, w, gi in zip(pcl.weights(new), ws, g):
        np.testing.assert_allclose(w_new, w - 0.1 * gi, atol=1e-13)
    assert float(info.loss) == pytest.approx(float(pcl.mse_loss(net, x, y)), rel=1e-14)


def test_cnn_trains_with_both_rules():
    key = jax.random.key(0)
    net = pcl.CNN(key, "relu", channels=(2, 3, 4), hidden=8, n_classes=3, init_std=0.3)
    x = jax.random.normal(jax.random.key(1), (4, 3, 32, 32))
    y = jax.nn.one_hot(jnp.array([0, 1, 2, 1]), 3)
    assert [w.shape for w in pcl.weights(net)] == [(2, 3, 3, 3), (3, 2, 3, 3), (4, 3, 3, 3), (8, 64), (3, 8)]
    eq = pcl.infer(net, x, y, pcl.Euler(dt=0.1, steps=10))
    assert [a.shape for a in eq.activities] == [(4, 2, 16, 16), (4, 3, 8, 8), (4, 4, 4, 4), (4, 8)]
    assert float(eq.energy) <= float(pcl.mse_loss(net, x, y))
    batches = [(x, y)]
    for rule in ("bp", "pc"):
        trained, hist = pcl.train(
            net, batches, rule=rule, optimizer=optax.sgd(0.05), solver=pcl.Euler(dt=0.1, steps=10), steps=5
        )
        assert float(pcl.mse_loss(trained, x, y)) < float(pcl.mse_loss(net, x, y))
        assert np.all(np.isfinite(hist.grad_norm)) and hist.grad_norm[0] > 0


def test_until_loss_stops_early(regression):
    x, y = regression
    net = pcl.MLP(jax.random.key(0), [4, 8, 4], "linear", init_std=0.3)
    _, hist = pcl.train(net, (x, y), rule="bp", optimizer=optax.sgd(0.05), steps=2000, until_loss=0.05, batch_size=32)
    assert len(hist) < 2000 and hist.loss[-1] < 0.05 and np.all(hist.loss[:-1] >= 0.05)


def test_history_round_trips(tmp_path, regression):
    x, y = regression
    net = pcl.MLP(jax.random.key(0), [4, 8, 4], "linear", init_std=0.3)
    onehot = jax.nn.one_hot(jnp.argmax(y, 1), 4)
    _, hist = pcl.train(net, (x, onehot), rule="pc", optimizer=optax.sgd(0.05), solver=pcl.ExactLinear(),
                        steps=12, batch_size=32, eval_data=(x, onehot), eval_every=5, meta={"seed": 0})
    assert np.all((hist.test_accuracy >= 0) & (hist.test_accuracy <= 1))
    for suffix in (".json", ".npz"):
        back = pcl.History.load(hist.save(tmp_path / f"h{suffix}"))
        assert back.rule == "pc" and back.meta["seed"] == 0
        for name in pcl.History._ARRAYS:
            np.testing.assert_array_equal(getattr(back, name), getattr(hist, name))


def test_checkpoint_resume_gives_the_same_run(tmp_path, regression):
    x, y = regression
    net = pcl.MLP(jax.random.key(0), [4, 6, 4], "tanh", init_std=0.3)
    kw = dict(rule="pc", optimizer=optax.sgd(0.05), solver=pcl.Euler(dt=0.1, steps=5), batch_size=64, key=jax.random.key(2))
    full, hist_full = pcl.train(net, (x, y), steps=10, **kw)
    ck = tmp_path / "run.ckpt"
    pcl.train(net, (x, y), steps=6, checkpoint=ck, checkpoint_every=3, **kw)  # "interrupted" after 6
    resumed, hist_res = pcl.train(net, (x, y), steps=10, checkpoint=ck, **kw)
    for a, b in zip(pcl.weights(full), pcl.weights(resumed)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(hist_full.loss, hist_res.loss)


def test_divergence_names_the_step_and_the_cause(regression):
    x, y = regression
    net = pcl.MLP(jax.random.key(0), [4, 8, 4], "linear", init_std=0.3)
    with pytest.raises(pcl.DivergenceError, match=r"diverged at step \d+.*learning rate") as err:
        pcl.train(net, (x, y * 100), rule="bp", optimizer=optax.sgd(10.0), steps=200)
    assert err.value.step is not None and len(err.value.history) == err.value.step
    assert all(np.isfinite(w).all() for w in pcl.weights(err.value.net))
    with pytest.raises(pcl.DivergenceError, match="dt=0.1"):
        pcl.train(net, (x, y * 100), rule="pc", optimizer=optax.sgd(10.0), solver=pcl.Euler(dt=0.1, steps=5), steps=200)
