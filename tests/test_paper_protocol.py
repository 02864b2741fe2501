"""The paper protocol equals the paper's own training code, step by step.

``_Notebook`` below transcribes, line by line and in NumPy, the classes ``PCN`` (``infer_train``,
``set_grads``, ``compute_tot_energy``) and ``BPN`` of the paper's notebooks
(``PC_vs_BP_Convergence_Experiments_on_DNNs.ipynb``, ``Matrix_Completion_Experiment.ipynb``) and
their training loops with ``torch.optim.SGD``; the layers are ``Sequential(Linear(bias=False),
act)`` and the last one a bare ``Linear``. PyTorch's autograd calls are replaced by their
explicit derivatives (``vjp`` of a layer ``f(W z)`` with ``v`` is ``W^T (f'(W z) * v)``). It
shares no code with the package: ``pcl.train`` with ``prediction="f(W z)"``, ``PaperEuler`` and
the paper protocol's gradient scales must land on the same weights, in float64.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclandscape as pcl
from pclandscape._compat import enable_x64
from pclandscape.experiments.base import escape_step, protocol_scales

_ACT = {
    "linear": (lambda a: a, lambda a: np.ones_like(a)),
    "tanh": (np.tanh, lambda a: 1.0 - np.tanh(a) ** 2),
    "relu": (lambda a: np.maximum(a, 0.0), lambda a: (a > 0).astype(a.dtype)),  # torch: relu'(0) = 0
}


class _Notebook:
    """``PCN`` / ``BPN`` of the notebooks with ``optim.SGD``; ``ws[l]`` is ``network[l][0].weight``."""

    def __init__(self, ws, act, dt=0.1):
        self.ws = [np.array(w, np.float64) for w in ws]
        self.f, self.df = _ACT[act]
        self.n_layers = len(self.ws)
        self.n_nodes = self.n_layers + 1
        self.dt = dt

    # network[l](x) and its pre-activation
    def layer(self, l, x):
        a = x @ self.ws[l].T
        return a if l == self.n_layers - 1 else self.f(a)

    def vjp(self, l, x, v):  # torch.autograd.functional.vjp(self.network[l], x, v)[1]
        a = x @ self.ws[l].T
        if l != self.n_layers - 1:
            v = v * self.df(a)
        return v @ self.ws[l]

    def forward(self, x):
        for l in range(self.n_layers):
            x = self.layer(l, x)
        return x

    def infer_train(self, obs, prior, n_iters):
        xs = [None] * self.n_nodes
        preds = [None] * self.n_nodes
        errs = [None] * self.n_nodes
        inputs = [None] * self.n_nodes  # what preds[l] was computed from (for set_grads)
        xs[0] = prior.copy()
        for l in range(1, self.n_layers):  # propagate_xs
            xs[l] = self.layer(l - 1, xs[l - 1])
        xs[-1] = obs.copy()
        dt = self.dt
        tot_energy_iters = []
        for t in range(n_iters):
            inputs[-1] = xs[self.n_layers - 1]
            preds[-1] = self.layer(self.n_layers - 1, xs[self.n_layers - 1])
            errs[-1] = xs[-1] - preds[-1]
            for l in reversed(range(1, self.n_layers)):
                inputs[l] = xs[l - 1]
                preds[l] = self.layer(l - 1, xs[l - 1])
                errs[l] = xs[l] - preds[l]
                epsdfdx = self.vjp(l, xs[l], errs[l + 1])
                dx = epsdfdx - errs[l]
                xs[l] = xs[l] + self.dt * dx
            tot_energy_iters.append(sum(float((e**2).sum()) for e in errs if e is not None))
            if t > 0 and tot_energy_iters[t] >= tot_energy_iters[t - 1] and self.dt > 0.025:
                self.dt /= 2
                if self.dt <= 0.025:
                    self.dt = dt
                    break
        # set_grads: autograd.grad(preds[l+1], W_l, -errs[l+1])
        grads = []
        for l in range(self.n_layers):
            h, v = inputs[l + 1], -errs[l + 1]
            if l != self.n_layers - 1:
                v = v * self.df(h @ self.ws[l].T)
            grads.append(v.T @ h)
        return grads, t + 1

    def pc_train(self, x, y, lr, steps, n_iters=50):
        """``train_pc``'s loop (one full batch per step): ``infer_train`` then ``optimizer.step()``."""
        dts, losses = [], []
        for _ in range(steps):
            losses.append(float(np.mean((self.forward(x) - y) ** 2)))  # nn.MSELoss()
            grads, _ = self.infer_train(y, x, n_iters)
            self.ws = [w - lr * g for w, g in zip(self.ws, grads)]
            dts.append(self.dt)
        return dts, losses

    def bp_train(self, x, y, lr, steps, mask=None):
        """``train_bp``: ``nn.MSELoss()(output [* mask], target [* mask]).backward()``, SGD."""
        mask = np.ones_like(y) if mask is None else mask
        for _ in range(steps):
            hs, a_s = [x], []
            for l in range(self.n_layers):
                a_s.append(hs[-1] @ self.ws[l].T)
                hs.append(a_s[-1] if l == self.n_layers - 1 else self.f(a_s[-1]))
            v = 2.0 * (hs[-1] * mask - y * mask) * mask / y.size
            grads = [None] * self.n_layers
            for l in reversed(range(self.n_layers)):
                if l != self.n_layers - 1:
                    v = v * self.df(a_s[l])
                grads[l] = v.T @ hs[l]
                v = v @ self.ws[l]
            self.ws = [w - lr * g for w, g in zip(self.ws, grads)]


def _setup(act, init_std, n=12, widths=(7, 9, 9, 4), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, widths[0]))
    y = rng.standard_normal((n, widths[-1]))
    ws = [init_std * rng.standard_normal((o, i)) for i, o in zip(widths[:-1], widths[1:])]
    return x, y, ws


@pytest.mark.parametrize(
    "act,init_std,dt,steps",
    [
        ("tanh", 0.6, 0.1, 12),  # near-monotone inference
        ("tanh", 0.8, 0.7, 12),  # dt too large: the energy rises, dt halves, carries over, resets
        ("relu", 0.8, 0.5, 10),  # dt halves again in a later training step
        ("linear", 0.6, 0.7, 10),
    ],
)
def test_pc_training_equals_notebook(act, init_std, dt, steps):
    x, y, ws = _setup(act, init_std)
    n, lr = x.shape[0], 0.01
    nb = _Notebook(ws, act, dt)
    nb_dts, nb_losses = nb.pc_train(x, y, lr, steps)
    bp_scale, pc_scale = protocol_scales("paper", n, y.shape[1])
    with enable_x64(True):
        net = pcl.MLP.from_weights([jnp.asarray(w) for w in ws], act, prediction="f(W z)")
        for steps_per_call in (1, 5):  # the step-by-step and the fused loops
            out, hist = pcl.train(net, (jnp.asarray(x), jnp.asarray(y)), rule="pc", solver=pcl.PaperEuler(dt=dt),
                                  optimizer=optax.sgd(lr), steps=steps, batch_size=n, key=None, grad_scale=pc_scale,
                                  steps_per_call=steps_per_call, progress=False)
            for w_pkg, w_nb in zip(pcl.weights(out), nb.ws):
                np.testing.assert_allclose(np.asarray(w_pkg), w_nb, rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(hist.inference_dt, nb_dts, rtol=0, atol=0)
            # nn.MSELoss = (2 / d_y) x Eq 1
            np.testing.assert_allclose(hist.loss * 2 / y.shape[1], nb_losses, rtol=1e-12)
    if dt > 0.5:  # the case exercises the step-size control
        assert min(nb_dts) < dt


def test_bp_training_equals_notebook():
    x, y, ws = _setup("tanh", 0.5)
    n, lr = x.shape[0], 0.05
    nb = _Notebook(ws, "tanh")
    nb.bp_train(x, y, lr, 15)
    bp_scale, _ = protocol_scales("paper", n, y.shape[1])
    with enable_x64(True):
        net = pcl.MLP.from_weights([jnp.asarray(w) for w in ws], "tanh", prediction="f(W z)")
        out, _ = pcl.train(net, (jnp.asarray(x), jnp.asarray(y)), rule="bp", optimizer=optax.sgd(lr), steps=15,
                           batch_size=n, key=None, grad_scale=bp_scale, progress=False)
    for w_pkg, w_nb in zip(pcl.weights(out), nb.ws):
        np.testing.assert_allclose(np.asarray(w_pkg), w_nb, rtol=1e-10, atol=1e-14)


def test_matrix_completion_bp_equals_notebook():
    """``MSELoss(output * mask, target * mask)`` averages over all n^2 entries: BP's scale is
    2 / d_y whatever the mask (0.2 for the 10 x 10 task), applied to Eq 1 over observed entries."""
    rng = np.random.default_rng(3)
    m = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 10))
    mask = (rng.random((10, 10)) > 0.2).astype(np.float64)
    ws = [0.3 * rng.standard_normal((o, i)) for i, o in [(10, 8), (8, 8), (8, 10)]]
    nb = _Notebook(ws, "linear")
    nb.bp_train(m * mask, m, 0.05, 10, mask=mask)
    bp_scale, _ = protocol_scales("paper", 10, 10)
    assert bp_scale == pytest.approx(0.2)
    with enable_x64(True):
        net = pcl.MLP.from_weights([jnp.asarray(w) for w in ws], "linear")
        y = jnp.asarray(np.where(mask > 0, m, np.nan))
        out, _ = pcl.train(net, (jnp.asarray(m * mask), y), rule="bp", optimizer=optax.sgd(0.05), steps=10,
                           batch_size=10, key=None, grad_scale=bp_scale, progress=False)
    for w_pkg, w_nb in zip(pcl.weights(out), nb.ws):
        np.testing.assert_allclose(np.asarray(w_pkg), w_nb, rtol=1e-10, atol=1e-14)


def test_paper_euler_control_rules():
    """The step-size rule on chains worked by hand (x = 1, W_1 = 1, y = 0, one hidden unit z,
    z_0 = 1, E = (z - 1)^2 + (w z)^2 the notebooks' sum of squared errors, dF/dz = (1 + w^2) z - 1).

    w = 1.5, dt = 0.8: E_0 = 2.25, z_1 = -0.8; E_1 = 4.68 >= E_0: dt -> 0.4 (the step already
    taken with 0.8 is kept: z_2 = 2.08); E_2 = 10.9008: dt -> 0.2, z_3 = -0.224; from there E
    decreases (1.611072, 0.80485632, ...) and 10 iterations end with dt = 0.2, returning the
    activities of the start of iteration 9: z_9 = 0.306714916.

    w = 9, a carried dt = 0.05: E_0 = 81, z_1 = 1 - 0.05 * 81 = -3.05; E_1 = 769.905 >= 81:
    dt -> 0.025 <= 0.025, so dt is reset to 0.05 (its value at the start of the call) and the
    loop stops after 2 iterations, returning z_1 = -3.05."""
    with enable_x64(True):
        x, y = jnp.asarray([[1.0]]), jnp.asarray([[0.0]])
        net = pcl.MLP.from_weights([jnp.asarray([[1.0]]), jnp.asarray([[1.5]])], "linear", prediction="f(W z)")
        solver = pcl.PaperEuler(dt=0.8, steps=10)
        z, steps, dt = solver.solve_with_state(net, x, y, net.feedforward(x)[:-1], solver.init_state())
        assert (int(steps), float(dt)) == (10, 0.2)
        assert float(z[0][0, 0]) == pytest.approx(0.306714916, abs=1e-12)

        net9 = net.with_weights([jnp.asarray([[1.0]]), jnp.asarray([[9.0]])])
        z, steps, dt = pcl.PaperEuler(dt=0.1).solve_with_state(net9, x, y, net9.feedforward(x)[:-1], 0.05)
        assert (int(steps), float(dt)) == (2, 0.05)
        assert float(z[0][0, 0]) == pytest.approx(-3.05, abs=1e-12)
    for w, dt0, n_iters, expected in ((1.5, 0.8, 10, (10, 0.2)), (9.0, 0.05, 50, (2, 0.05))):
        nb = _Notebook([np.array([[1.0]]), np.array([[w]])], "linear", dt=dt0)
        _, nb_steps = nb.infer_train(np.array([[0.0]]), np.array([[1.0]]), n_iters)
        assert (nb_steps, nb.dt) == expected


def test_a_paper_euler_started_at_the_carried_dt_continues_the_notebooks_pcn():
    """fig5 starts training from the step size that the notebook's inference before training
    leaves, as a ``PaperEuler`` whose ``dt`` is that value. That is exact: the notebook's
    ``PCN.dt`` persists between ``infer_train`` calls, and a call resets to the value in force at
    its own start. Two calls of the transcription (dt 0.8 halved to 0.2 on the first chain, then
    a chain where it collapses and resets) against the carried solver."""
    with enable_x64(True):
        x, y = jnp.asarray([[1.0]]), jnp.asarray([[0.0]])
        nb = _Notebook([np.array([[1.0]]), np.array([[1.5]])], "linear", dt=0.8)
        nb.infer_train(np.array([[0.0]]), np.array([[1.0]]), 10)
        first = nb.dt
        nb.ws[1] = np.array([[9.0]])
        _, nb_steps = nb.infer_train(np.array([[0.0]]), np.array([[1.0]]), 50)

        net = pcl.MLP.from_weights([jnp.asarray([[1.0]]), jnp.asarray([[1.5]])], "linear", prediction="f(W z)")
        solver = pcl.PaperEuler(dt=0.8, steps=10)
        _, _, dt = solver.solve_with_state(net, x, y, net.feedforward(x)[:-1], solver.init_state())
        assert float(dt) == first == 0.2  # the first call did halve
        carried = dataclasses.replace(solver, dt=float(dt), steps=50)
        net9 = net.with_weights([jnp.asarray([[1.0]]), jnp.asarray([[9.0]])])
        _, steps, dt2 = carried.solve_with_state(net9, x, y, net9.feedforward(x)[:-1], carried.init_state())
        assert (int(steps), float(dt2)) == (nb_steps, nb.dt) == (4, 0.2)  # 0.2 -> 0.1 -> 0.05 -> 0.025: reset


def test_the_notebooks_epoch_rule_and_epochs_that_continue_one_run():
    """The notebook stops PC after epoch e > 1 when ``loss[e-1] - loss[e] < LOSS_TOLERANCE`` (epoch
    means of MSELoss); fig5's epoch-by-epoch training through a checkpoint is one run: the same
    loss and step size at every step as one ``pcl.train`` call of as many steps."""
    from pclandscape.experiments import fig5

    assert fig5.epochs_to_run([], 1e-3) and fig5.epochs_to_run([0.5], 1e-3)
    assert fig5.epochs_to_run([0.5, 0.4], 1e-3)
    assert not fig5.epochs_to_run([0.5, 0.4995], 1e-3)  # fell by 5e-4 < 1e-3: stop
    assert not fig5.epochs_to_run([0.5, 0.6], 1e-3)  # rose: stop
    assert fig5.epochs_to_run([0.5, 0.4, 0.3985], 1e-3)  # fell by 1.5e-3

    x = np.asarray(jax.random.normal(jax.random.key(0), (96, 6)))
    y = np.asarray(jax.nn.one_hot(jax.random.randint(jax.random.key(1), (96,), 0, 3), 3))
    net = pcl.MLP(jax.random.key(2), [6, 5, 5, 3], "tanh", init_std=0.5, prediction="f(W z)")
    cfg = fig5.Config(max_epochs=3, epoch_tol=-np.inf)  # never stops early: 3 epochs of 3 steps
    common = dict(optimizer=fig5.sgd(0.05), batch_size=32, key=jax.random.key(3), progress=False)
    solver = pcl.PaperEuler(dt=0.8, steps=5)
    hist = fig5._train_epochs(cfg, net, (x, y), solver, 2.0, common)
    out, one = pcl.train(net, (x, y), rule="pc", solver=solver, steps=9, grad_scale=2.0, **common)
    assert len(hist) == 9 and len(hist.meta["epoch_mean_mse"]) == 3
    np.testing.assert_array_equal(hist.loss, one.loss)
    np.testing.assert_array_equal(hist.inference_dt, one.inference_dt)
    assert np.min(one.inference_dt) < 0.8  # dt was halved and carried across the epochs
    np.testing.assert_allclose(hist.meta["epoch_mean_mse"], [np.mean(one.loss[i:i + 3]) * 2 / 3 for i in (0, 3, 6)],
                               rtol=1e-6)


def test_an_interrupted_epoch_run_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """Inside a resume folder the epoch checkpoint survives: a run stopped after 2 epochs and
    started again for 3 trains only the third, and ends as one uninterrupted run."""
    from pclandscape.experiments import base, fig5

    x = np.asarray(jax.random.normal(jax.random.key(0), (64, 5)))
    y = np.asarray(jax.nn.one_hot(jax.random.randint(jax.random.key(1), (64,), 0, 3), 3))
    net = pcl.MLP(jax.random.key(2), [5, 4, 3], "tanh", init_std=0.5, prediction="f(W z)")
    common = dict(optimizer=fig5.sgd(0.05), batch_size=32, key=jax.random.key(3), progress=False)
    solver = pcl.PaperEuler(dt=0.8, steps=5)
    calls = []
    train = pcl.train

    def spy(*a, **k):
        out = train(*a, **k)
        calls.append((k["steps"], len(out[1])))
        return out

    monkeypatch.setattr(fig5.pcl, "train", spy)
    with base.resume_dir(tmp_path / "resume"):
        fig5._train_epochs(fig5.Config(max_epochs=2, epoch_tol=-np.inf), net, (x, y), solver, 2.0, common, "p.eqx")
        calls.clear()
        hist = fig5._train_epochs(fig5.Config(max_epochs=3, epoch_tol=-np.inf), net, (x, y), solver, 2.0, common, "p.eqx")
    assert calls == [(2, 4), (6, 6)]  # the first call found 4 steps done; one more epoch trained
    _, one = train(net, (x, y), rule="pc", solver=solver, steps=6, grad_scale=2.0, **common)
    np.testing.assert_array_equal(hist.loss, one.loss)


def test_a_rerun_picks_up_the_parts_an_interrupted_run_finished(tmp_path, monkeypatch, capsys):
    """runner.run_experiment keeps an experiment's finished parts (base.resumable) in
    OUT/.NAME.resume-<hash>/ across an interrupt, uses them when the same config runs again,
    and removes the folder once the run is complete."""
    from pclandscape.experiments import base, runner

    mod = runner.get("fig3")
    computed, attempts = [], []

    def part(i):
        computed.append(i)
        return (pcl.History(rule="bp", loss=np.full(3, float(i))),)

    def run(cfg, progress=None):
        attempts.append(1)
        first = base.resumable("first", lambda: part(1), 1)
        if len(attempts) == 1:  # the first attempt is interrupted after its first part
            raise KeyboardInterrupt
        second = base.resumable("second", lambda: part(2), 1)
        res = base.Results("fig3", cfg)
        res.add(base.claim("fig3.x", "s", "e", f"{first[0].loss[0]} {second[0].loss[0]}", True))
        return res

    monkeypatch.setattr(mod, "run", run)
    monkeypatch.setattr(mod, "plot", lambda res: {})
    cfg = runner.make_config("fig3", quick=True)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment("fig3", cfg, tmp_path)
    kept = list(tmp_path.glob(".fig3.resume-*"))
    assert len(kept) == 1 and (kept[0] / "first.0.npz").is_file()
    payload = runner.run_experiment("fig3", cfg, tmp_path)
    assert computed == [1, 2]  # the first part was not computed again
    assert payload["claims"][0]["measured"] == "1.0 2.0"
    assert not list(tmp_path.glob(".fig3.resume-*"))


def test_paper_euler_validation():
    for bad in (dict(dt=0.0), dict(dt=-1.0), dict(dt="a"), dict(steps=0), dict(steps=2.5), dict(min_dt=float("nan"))):
        with pytest.raises(ValueError, match="PaperEuler"):
            pcl.PaperEuler(**bad)


def test_protocol_scales():
    # paper: nn.MSELoss() = mean over N * d_y entries = (2 / d_y) x Eq 1; PC: batch sum = N x Eq 2
    assert protocol_scales("paper", 64, 10) == (pytest.approx(0.2), 64.0)
    bp, pc = protocol_scales("paper", 64, 10)
    assert pc / bp == pytest.approx(320.0)
    assert protocol_scales("fair", 64, 10) == (1.0, 1.0)
    with pytest.raises(ValueError, match="protocol"):
        protocol_scales("bogus", 64, 10)


def test_escape_step():
    loss = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 9.6, 9.4, 5.0])
    assert escape_step(loss, 0.95) == 6  # first value < 9.5
    assert escape_step(loss, 0.5) is None  # 5.0 is not < 5.0: censored
    assert escape_step(loss, 0.51) == 7
    assert escape_step(np.array([]), 0.5) is None
    # the plateau is the median of the first `window` steps, robust to one outlier
    assert escape_step(np.array([10.0, 100.0, 10.0, 10.0, 10.0, 4.0]), 0.5) == 5


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_prediction_forms_compute_the_same_function_and_different_energies(act):
    """W f(z) and f(W z) layers give the same feedforward function (for the CNN because
    max-pooling commutes with a non-decreasing f), and different energies away from it; the
    f(W z) energy equals the notebooks' sum of squared errors written out by hand."""
    with enable_x64(True):
        key = jax.random.key(3)
        cnn = pcl.CNN(key, act, channels=(2, 3, 2), hidden=5, in_shape=(1, 8, 8), init_std=0.5, dtype=jnp.float64)
        cnn_f = cnn.with_prediction("f(W z)")
        x = jax.random.normal(jax.random.key(4), (3, 1, 8, 8), jnp.float64)
        np.testing.assert_allclose(np.asarray(cnn_f(x)), np.asarray(cnn(x)), rtol=1e-13, atol=1e-15)
        assert all(a is b for a, b in zip(cnn_f.weights, cnn.weights)) and cnn.prediction == "W f(z)"

        mlp = pcl.MLP(key, [4, 6, 5, 3], act, init_std=0.8, dtype=jnp.float64)
        mlp_f = mlp.with_prediction("f(W z)")
        xm = jax.random.normal(jax.random.key(5), (7, 4), jnp.float64)
        ym = jax.random.normal(jax.random.key(6), (7, 3), jnp.float64)
        np.testing.assert_allclose(np.asarray(mlp_f(xm)), np.asarray(mlp(xm)), rtol=1e-13, atol=1e-15)
        z = [jax.random.normal(jax.random.key(7 + i), (7, n), jnp.float64) for i, n in enumerate((6, 5))]
        f = _ACT[act][0]
        w1, w2, w3 = (np.asarray(w) for w in mlp.weights)
        xs, z1, z2, ys = np.asarray(xm), np.asarray(z[0]), np.asarray(z[1]), np.asarray(ym)
        by_hand = (np.sum((z1 - f(xs @ w1.T)) ** 2) + np.sum((z2 - f(z1 @ w2.T)) ** 2) + np.sum((ys - z2 @ w3.T) ** 2)) / (2 * 7)
        assert float(pcl.pc_energy(mlp_f, z, xm, ym)) == pytest.approx(by_hand, rel=1e-13)
        assert abs(float(pcl.pc_energy(mlp, z, xm, ym)) - by_hand) > 1e-3
    with pytest.raises(ValueError, match="prediction"):
        mlp.with_prediction("W z")


def _conv_same_by_hand(h, k, b):
    """PyTorch's Conv2d(kernel 3, stride 1, padding 1) (a cross-correlation), written out."""
    n, c, hh, ww = h.shape
    hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, k.shape[0], hh, ww))
    for di in range(3):
        for dj in range(3):
            out += np.einsum("nchw,oc->nohw", hp[:, :, di:di + hh, dj:dj + ww], k[:, :, di, dj])
    return out + b[None, :, None, None]


def _pool_by_hand(h):
    n, c, hh, ww = h.shape
    return h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_cnn_with_conv_biases_is_the_notebooks_cifar_net(act):
    """The notebook's CIFAR-10 CNN: blocks Conv2d (with PyTorch's default bias) -> f -> MaxPool2d,
    then Linear(bias=False) -> f and a bare Linear(bias=False). ``use_bias`` per layer gives
    biases on the conv blocks only; the f(W z) energy equals the notebook's sum of squared
    errors written out by hand (numpy convolutions), and both prediction forms compute the
    same function with the biases too. fig5's CNN is that net at the notebook's sizes, its conv
    biases drawn as PyTorch's default U(-1/sqrt(9 c_in), 1/sqrt(9 c_in))."""
    from pclandscape.experiments import fig5

    with enable_x64(True):
        cnn = pcl.CNN(jax.random.key(0), act, channels=(2, 3, 2), hidden=5, in_shape=(1, 8, 8), init_std=0.5,
                      use_bias=(True, True, True, False, False), dtype=jnp.float64, prediction="f(W z)")
        assert [b is None for b in cnn.biases] == [False, False, False, True, True]
        bs = tuple(jax.random.normal(jax.random.key(10 + i), b.shape, jnp.float64) for i, b in enumerate(cnn.biases[:3]))
        cnn = eqx.tree_at(lambda n: n.biases, cnn, bs + (None, None))
        x = jax.random.normal(jax.random.key(4), (3, 1, 8, 8), jnp.float64)
        y = jax.random.normal(jax.random.key(5), (3, 10), jnp.float64)
        shapes = [(3, 2, 4, 4), (3, 3, 2, 2), (3, 2, 1, 1), (3, 5)]
        z = [jax.random.normal(jax.random.key(20 + i), s, jnp.float64) for i, s in enumerate(shapes)]
        f = _ACT[act][0]
        k1, k2, k3, w4, w5 = (np.asarray(w) for w in cnn.weights)
        b1, b2, b3 = (np.asarray(b) for b in bs)
        xs, ys = np.asarray(x), np.asarray(y)
        z1, z2, z3, z4 = (np.asarray(v) for v in z)
        mus = [_pool_by_hand(f(_conv_same_by_hand(xs, k1, b1))), _pool_by_hand(f(_conv_same_by_hand(z1, k2, b2))),
               _pool_by_hand(f(_conv_same_by_hand(z2, k3, b3))), f(z3.reshape(3, -1) @ w4.T), z4 @ w5.T]
        by_hand = sum(np.sum((t - m) ** 2) for t, m in zip([z1, z2, z3, z4, ys], mus)) / (2 * 3)
        assert float(pcl.pc_energy(cnn, z, x, y)) == pytest.approx(by_hand, rel=1e-12)
        np.testing.assert_allclose(np.asarray(cnn.with_prediction("W f(z)")(x)), np.asarray(cnn(x)), rtol=1e-12, atol=1e-14)

    cfg = fig5.Config()
    assert (cfg.cnn_channels, cfg.cnn_hidden, cfg.cnn_conv_bias) == ((64, 128, 256), 4096, True)
    net = fig5.initial_net(fig5.quick_config(), jax.random.key(0), "cnn", act)
    assert net.biases[3] is None and net.biases[4] is None
    for k, b in zip(net.weights[:3], net.biases[:3]):
        bound = 1 / np.sqrt(9 * k.shape[1])
        assert 0.5 * bound < float(jnp.abs(b).max()) <= bound
    with pytest.raises(ValueError, match="one bool per layer"):
        pcl.CNN(jax.random.key(0), act, use_bias=(True, True))


def test_fig12_start_matches_the_notebooks_other_saddle_init():
    """The DNN notebook's "other_saddle": every layer N(0, 5e-3^2) but W_{L-1}, left at
    nn.Linear's default kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (variance 1/(3 fan_in))."""
    from pclandscape.experiments import fig5, fig12

    cfg = fig12.quick_config()
    net = fig5.initial_net(cfg, jax.random.key(0), [784, 200, 200, 200, 10], "tanh")
    ws = [np.asarray(w) for w in pcl.weights(net)]
    bound = 1 / np.sqrt(200)
    w = ws[-2]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.var(w) == pytest.approx(1 / (3 * 200), rel=0.03)  # 40,000 draws: s.e. ~0.6 %
    assert abs(np.mean(w)) < 4 * bound / np.sqrt(3 * w.size)
    for other in (*ws[:-2], ws[-1]):
        assert np.std(other) == pytest.approx(cfg.init_std, rel=0.05)
