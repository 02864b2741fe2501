"""Each experiment's quick config, shrunk further, runs end to end and its paper claims pass.

Data sets that are absent (no network in tests) fall back as in ``make demo``: MNIST to
Fashion-MNIST (when Debian's package is installed) or MNIST-1D (generated). Findings
(beyond-the-paper checks) and the fair comparison's verdict carry their own verdicts and are
not asserted here; their presence is.
"""

import dataclasses

import numpy as np

import matplotlib
import pytest
import pclandscape as pcl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pclandscape.experiments import runner  # noqa: E402

SHRUNK = {
    "fig1": dict(depths=(2,), width=16, steps=3),
    "fig2": dict(seeds=(0, 1), wide_seeds=(0, 1), chain_steps=60, wide_steps=120, resolution=8, protocols=("paper",)),
    "fig3": dict(depths=(1, 2), chain_depths=(1, 2)),
    "fig4": dict(mnist_depths=(1,), mnist1d_depths=(1,), wide_depths=(1,), wide_width=40),
    "fig5": dict(activations=("linear", "tanh"), protocols=("paper",), hessian_batch=8),
    "fig6": dict(protocols=("paper",), classify=False),
    "fig9_10": dict(depths=(2,), datasets=("toy", "mnist1d"), variants=("y=-x",)),
    "fig12": dict(activations=("linear",), protocols=("paper",)),
    "fair": dict(depths=(2,), seeds=(0, 1), max_steps=150, lrs=(1e-3, 0.1, 1.0, 31.6), n_boot=200),
    "mupc": dict(depths=(3, 4), width=8, steps=20, n_train=640, n_test=200, lrs=(0.1, 1.0), tune_depth=3,
                 params=("mupc",), hessian_max_depth=3, hessian_batch=8, cond_batch=2),
}


@pytest.fixture(scope="module", autouse=True)
def offline_data(tmp_path_factory):
    """The same data on every machine: no MNIST / Fashion-MNIST / CIFAR-10 files are visible,
    so the image experiments fall back to MNIST-1D (generated), as on a bare CI machine."""
    from pathlib import Path

    from pclandscape import data as D

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("PCLANDSCAPE_DOWNLOAD", "0")
        mp.delenv("PCLANDSCAPE_DATA", raising=False)
        mp.chdir(home)
        mp.setitem(D.SYSTEM_DIRS, "fashion_mnist", [Path(home) / "absent"])
        yield


def test_every_experiment_has_a_shrunk_test():
    assert set(SHRUNK) == set(runner.EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", runner.EXPERIMENTS)
def test_quick_config_shrunk_passes_its_paper_claims(name):
    mod = runner.get(name)
    cfg = dataclasses.replace(mod.quick_config(), **SHRUNK[name])
    res = mod.run(cfg)
    assert not any("mnist" in d and "mnist1d" not in d for d in res.data), res.data  # offline fallback
    paper = [c for c in res.claims if c.category == "paper" and c.verdict is None]
    decided = [c for c in res.claims if c.verdict is not None]
    if runner.EXPERIMENT_SECTIONS[name] == "beyond":  # findings only, each with its own verdict
        assert not paper and [c for c in res.claims if c.category == "finding"], f"{name} reports no finding"
    else:
        assert paper or decided, f"{name} checks no paper claim"
    from pclandscape.experiments.fair import VERDICTS

    assert all(c.verdict in VERDICTS for c in decided)
    failed = [f"{c.id}: measured {c.measured}, expected {c.expected}" for c in paper if not c.passed]
    assert not failed, "\n".join(failed)
    for c in res.claims:
        assert c.statement and c.expected and c.measured and c.category in ("paper", "finding", "skipped")
    if name == "fair":  # the stored run (as results.json holds it) recomputes to the same cells
        import json

        from pclandscape.experiments import fair

        stored = json.loads(json.dumps({"config": dataclasses.asdict(cfg), "series": res.series}, default=str))
        again = fair.recompute_cells(stored)
        keys = ("verdict", "ratio", "ratio_lo", "ratio_hi", "edge_sensitive", "margin_verdict", "edge_alternatives")
        assert [{k: r[k] for k in keys} for r in again] == [{k: r[k] for k in keys} for r in res.series["table"]]
    figs = mod.plot(res)
    assert figs
    for fig in figs.values():
        assert fig.axes
        plt.close(fig)


def test_full_configs_follow_the_paper():
    """The non-quick defaults are §A.4's settings."""
    c1 = runner.make_config("fig1")
    assert (c1.depths, c1.width, c1.lr, c1.batch) == ((2, 5, 10), 300, 1e-3, 64)
    heun = c1.solver.build()
    assert isinstance(heun, pcl.Heun) and (heun.t1, heun.rtol, heun.atol) == (300.0, 1e-3, 1e-3)
    c5 = runner.make_config("fig5")
    assert (c5.width, c5.n_layers, c5.lr, c5.batch, c5.T, c5.dt, c5.until_loss) == (500, 5, 1e-3, 64, 50, 0.1, 1e-3)
    assert c5.datasets == ("mnist", "fashion_mnist") and c5.activations == ("linear", "tanh", "relu") and c5.cnn
    # the notebook's schedule: MAX_EPOCHS = 35, LOSS_TOLERANCE = 1e-3, the inference before training
    assert (c5.stop, c5.max_epochs, c5.epoch_tol, c5.pretrain_inference) == ("epochs", 35, 1e-3, True)
    c6 = runner.make_config("fig6")
    assert (c6.n, c6.rank, c6.masked, c6.hidden, c6.width, c6.lr) == (10, 3, 0.2, 3, 100, 1e-2)
    c4 = runner.make_config("fig4")
    assert (c4.mnist_widths, c4.mnist1d_widths, c4.batch) == ((10, 10, 5), (100, 50, 10), 64)
    c2 = runner.make_config("fig2")
    assert (c2.wide_widths, c2.seeds, c2.batch) == ((1, 10, 10, 1), (0, 1, 2, 3, 4), 64)


def test_mupc_runs_relu_nets_and_leaves_their_origin_out():
    """ReLU is in mupc's default config. At W = 0 every activity of a residual net's equilibrium
    is 0, on ReLU's kink, where F* has no Hessian: the run stopped there with an error (after
    every tanh cell had trained). Now the origin is analysed for tanh only, and a note says why
    not for ReLU; ReLU's PC training still reaches the equilibrium."""
    mod = runner.get("mupc")
    cfg = dataclasses.replace(mod.quick_config(), **dict(SHRUNK["mupc"], activations=("relu",), depths=(3,)))
    res = mod.run(cfg)
    assert "relu_mupc_L3" not in res.series["lambda_min_origin"]
    assert not [c for c in res.claims if c.id == "mupc.origin_saddle"]
    assert any("not analysed for relu nets" in n for n in res.notes)
    eq = next(c for c in res.claims if c.id == "mupc.equilibrium")
    assert eq.passed and res.series["max_inference_residual"]["relu_mupc_L3"] <= 1.001e-5
    assert res.series["max_inference_residual_lr"]["relu_mupc_L3"] in cfg.lrs  # whose residual it is


def test_an_interrupted_mupc_run_resumes_from_its_finished_cells(tmp_path, monkeypatch):
    """Inside a resume folder every finished (activation, parameterisation, depth) cell is
    kept as one record; a rerun of the same config reads them, trains only the cell that is
    missing (here the one an interrupt would have cut short), and reports what the first run
    reported."""
    from pclandscape.experiments import base

    mod = runner.get("mupc")
    cfg = dataclasses.replace(mod.quick_config(), **SHRUNK["mupc"])
    folder = tmp_path / "resume"
    with base.resume_dir(folder):
        first = mod.run(cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["tanh_mupc_L3.json", "tanh_mupc_L4.json"]
    (folder / "tanh_mupc_L4.json").unlink()
    trained, real = [], pcl.train_many

    def counting(*args, **kw):
        trained.append(kw["rule"])
        return real(*args, **kw)

    monkeypatch.setattr(pcl, "train_many", counting)
    with base.resume_dir(folder):
        again = mod.run(cfg)
    assert trained == ["pc", "bp"]  # the missing cell only
    for key in ("accuracy", "condition", "max_inference_residual", "lambda_min_origin", "diverged"):
        assert again.series[key].keys() == first.series[key].keys()
        for k, v in first.series[key].items():
            if "L3" in k:  # read back: the very values
                assert again.series[key][k] == v
            else:  # trained again: the same program on the same data
                np.testing.assert_allclose(again.series[key][k], v, rtol=1e-6)
    assert [c.passed for c in again.claims] == [c.passed for c in first.claims]


def test_final_residuals_infers_with_each_members_own_weights():
    """``final_residuals`` takes member i's weights out of the stacked grid: its reported residual is
    that of ``pcl.infer`` on the same net built alone, and its float64 residual is that point's."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import pclandscape as pcl
    from pclandscape.experiments.base import final_residuals

    nets = eqx.filter_vmap(lambda k: pcl.MLP(k, [3, 5, 5, 2], "tanh"))(jax.random.split(jax.random.key(0), 3))
    x, y = jax.random.normal(jax.random.key(1), (4, 3)), jax.random.normal(jax.random.key(2), (4, 2))
    solver = pcl.Newton(tol=1e-4)
    out = final_residuals(nets, [0, 2], x, y, solver)
    assert sorted(out) == [0, 2]
    for i in (0, 2):
        alone = pcl.MLP(jax.random.split(jax.random.key(0), 3)[i], [3, 5, 5, 2], "tanh")
        eq = pcl.infer(alone, x, y, solver)
        assert (out[i].reported, out[i].residual) == (float(eq.grad_norm), pcl.verify_equilibrium(alone, x, y, eq).residual)
    assert out[0].residual != out[2].residual and jnp.zeros(1).dtype == jnp.float32
