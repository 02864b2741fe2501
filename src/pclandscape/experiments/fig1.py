"""Fig 1: the energy at the numerical inference equilibrium equals Theorem 1's closed form.

Deep linear networks (H = 2, 5, 10 hidden layers of width 300) are trained by PC with SGD
(lr 1e-3, batch 64) on MNIST, Fashion-MNIST and CIFAR-10; at every step the energy at the
numerical equilibrium (Heun + PID, T = 300, tolerances 1e-3, as in §A.4) is compared with
Eq 5 on the same batch and weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import pclandscape as pcl

from .base import Results, claim, data_label, load_data, residuals_reported, sgd
from .solvers import SolverSpec

NAME = "fig1"
DESCRIPTION = "Fig 1: energy at the numerical equilibrium vs Theorem 1 (DLNs, H = 2, 5, 10) during training"

_FALLBACK = {"mnist": ("fashion_mnist", "mnist1d"), "fashion_mnist": ("mnist", "mnist1d"), "cifar10": ("fashion_mnist", "mnist", "mnist1d")}


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0,)
    datasets: tuple = ("mnist", "fashion_mnist", "cifar10")
    depths: tuple = (2, 5, 10)
    width: int = 300
    lr: float = 1e-3
    batch: int = 64
    steps: int = 200
    # Heun + PID as in §A.4 (t1 = 300, rtol = atol = 1e-3), stopped once ||dF_i/dz_i|| <= tol;
    # error_norm=max: every activity within tolerance (see pcl.Heun)
    solver: SolverSpec = SolverSpec("heun", (("t1", 300.0), ("rtol", 1e-3), ("atol", 1e-3), ("tol", 1e-3),
                                             ("error_norm", "max")))
    rel_gap: float = 1e-3  # claim: |F - F*| / F* at every step
    data_dir: str | None = None
    data_fallback: bool = True  # False: a missing data set is an error (CLI --no-fallback)


def quick_config() -> Config:
    """A 2-core-CPU variant: one data set, width 32 (the paper's 300), 6 training steps (200)."""
    return Config(datasets=("mnist",), width=32, steps=6)


def progress_total(cfg) -> int:
    return len(cfg.datasets) * len(cfg.depths) * len(cfg.seeds)


def _theory_metric(net, x, y):
    return pcl.theory.equilibrated_energy(pcl.weights(net), x, y)


def run(cfg: Config, progress=None) -> Results:
    res = Results(NAME, cfg)
    solver = cfg.solver.build()
    worst, exact_err, residual = {}, {}, {}
    for dname in cfg.datasets:
        ds = load_data(res, dname, cfg, fallback=_FALLBACK.get(dname, ()), flatten=True)
        x_all, y_all = jnp.asarray(ds.x_train.reshape(len(ds.x_train), -1)), jnp.asarray(ds.y_train)
        label = res.series.setdefault("labels", {})[dname] = data_label(dname, ds)
        for seed in cfg.seeds:
            for h in cfg.depths:
                widths = [x_all.shape[1]] + [cfg.width] * h + [y_all.shape[1]]
                net = pcl.MLP(jax.random.key(seed), widths, "linear")
                with residuals_reported():  # in the notes
                    net, hist = pcl.train(
                        net, (x_all, y_all), rule="pc", optimizer=sgd(cfg.lr), solver=solver, steps=cfg.steps,
                        batch_size=cfg.batch, key=jax.random.key(seed + 1000), progress=False,
                        metrics={"theory": _theory_metric},
                    )
                theory_e, num_e = hist.extra["theory"], hist.energy
                gap = np.abs(num_e - theory_e) / np.abs(theory_e)
                tag = f"{label}_H{h}_s{seed}"
                res.arrays[f"{tag}_energy"], res.arrays[f"{tag}_theory"], res.arrays[f"{tag}_gap"] = num_e, theory_e, gap
                worst[tag] = float(gap.max())
                residual[tag] = float(np.max(hist.inference_grad_norm))
                xb, yb = x_all[: cfg.batch], y_all[: cfg.batch]
                e_exact = float(pcl.infer(net, xb, yb, pcl.ExactLinear(method="activity")).energy)
                e_th = float(_theory_metric(net, xb, yb))
                exact_err[tag] = abs(e_exact - e_th) / abs(e_th)
                if progress:
                    progress.update(1)
    res.add(claim("fig1.theorem1", "The energy at the numerical equilibrium (Heun + PID, T = 300, tol 1e-3) matches Eq 5 at "
                  "every training step", f"max_step |F - F*|/F* <= {cfg.rel_gap:g}",
                  ", ".join(f"{k}: {v:.1e}" for k, v in worst.items()), max(worst.values()) <= cfg.rel_gap))
    res.add(claim("fig1.exact", "Beyond the paper: the exact block-tridiagonal solve (ExactLinear) matches Eq 5 to float32 "
                  "precision", "rel. diff <= 1e-4 (float32)", ", ".join(f"{k}: {v:.1e}" for k, v in exact_err.items()),
                  max(exact_err.values()) <= 1e-4, category="finding"))
    res.series.update(max_rel_gap=worst, max_inference_residual=residual, exact_rel_err=exact_err)
    res.notes.append(
        "Heun + PID with tolerances 1e-3 stalls at a residual ||dF/dz|| of ~1e-2 (an explicit adaptive "
        "solver on a stiff gradient flow hovers at its stability limit); the energy error is second order in "
        "the residual, so the relative gap stays far below 1e-3. Max residuals: "
        + ", ".join(f"{k}: {v:.1e}" for k, v in residual.items())
    )
    return res


def plot(res: Results) -> dict:
    from .plotting import new_figure

    cfg = res.config
    fig, axes = new_figure(2, len(cfg.datasets), size=(3.6, 2.8))
    colors = {2: "#1f77b4", 5: "#ff7f0e", 10: "#2ca02c"}
    for j, dname in enumerate(cfg.datasets):
        for h in cfg.depths:
            tag = f"{res.series['labels'][dname]}_H{h}_s{cfg.seeds[0]}"
            c = colors.get(h)
            axes[0, j].plot(res.arrays[f"{tag}_energy"], color=c, lw=2, alpha=0.5, label=f"H={h} numerical")
            axes[0, j].plot(res.arrays[f"{tag}_theory"], color=c, ls="--", lw=1, label=f"H={h} theory (Eq 5)")
            axes[1, j].semilogy(np.maximum(res.arrays[f"{tag}_gap"], 1e-16), color=c, label=f"H={h}")
        axes[0, j].set_title(res.series["labels"][dname], fontsize=9)
        axes[0, j].set_ylabel("energy")
        axes[0, j].legend(fontsize=6)
        axes[1, j].axhline(cfg.rel_gap, color="grey", ls=":", lw=1)
        axes[1, j].set_ylabel("|F - F*| / F*")
        axes[1, j].set_xlabel("training step")
    fig.suptitle("Fig 1: energy at the numerical equilibrium vs Theorem 1", fontsize=10)
    fig.tight_layout()
    return {"fig1_energy": fig}
