"""Fig 4: Hessians at the origin on MNIST and MNIST-1D (H = 1, 2, 3), and wide nets by Lanczos.

The paper's narrow nets (MNIST widths 10, 10, 5 and MNIST-1D widths 100, 50, 10 for H = 1,
2, 3) get dense Hessians of L and of the numerical F* (exact implicit Hessian), compared
entry by entry with Eqs 6 and 8 and by spectrum with the closed-form spectra. Beyond the
paper, the 300-wide MNIST nets (p ~ 2-3 x 10^5, too big for dense Hessians) get
lambda_min of the implicit H_F* by Lanczos, compared with Eq 8's.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

import pclandscape as pcl
from pclandscape import theory

from .._compat import enable_x64
from .base import Results, claim, data_label, fmt, load_data

NAME = "fig4"
DESCRIPTION = "Fig 4: Hessians at the origin on MNIST / MNIST-1D vs Eqs 6, 8 (+ wide nets by Lanczos)"


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0,)
    batch: int = 64
    mnist_depths: tuple = (1, 2, 3)
    mnist1d_depths: tuple = (1, 2, 3)
    mnist_widths: tuple = (10, 10, 5)  # hidden width for H = 1, 2, 3 (§A.4)
    mnist1d_widths: tuple = (100, 50, 10)
    wide_width: int = 300  # beyond the paper: Lanczos on the wide MNIST nets
    wide_depths: tuple = (1, 2, 3)
    dense_spectrum_max_p: int = 10_000  # full eigvalsh up to this size, Lanczos extremes above
    tol: float = 1e-10
    lanczos_rtol: float = 1e-6
    data_dir: str | None = None
    data_fallback: bool = True  # False: a missing data set is an error (CLI --no-fallback)


def quick_config() -> Config:
    """A 2-core-CPU variant: MNIST at H = 2 only, MNIST-1D at H = 1, 2, the wide (Lanczos)
    check at H = 2, and full dense spectra only up to p = 1500."""
    return Config(mnist_depths=(2,), mnist1d_depths=(1, 2), wide_depths=(2,), dense_spectrum_max_p=1500)


def progress_total(cfg) -> int:
    return len(cfg.mnist_depths) + len(cfg.mnist1d_depths) + len(cfg.wide_depths)


def _batch(ds, n, seed):
    idx = np.random.default_rng(seed).permutation(len(ds.x_train))[:n]
    return jnp.asarray(ds.x_train[idx], jnp.float64), jnp.asarray(ds.y_train[idx], jnp.float64)


def _spectrum(h: np.ndarray, op, max_p: int):
    if h.shape[0] <= max_p:
        return np.linalg.eigvalsh(h), True
    lo = pcl.lanczos(op, k=5, which="smallest")
    hi = pcl.lanczos(op, k=5, which="largest")
    return np.concatenate([np.asarray(lo.eigenvalues), np.asarray(hi.eigenvalues)[::-1]]), False


def run(cfg: Config, progress=None) -> Results:
    res = Results(NAME, cfg)
    seed = cfg.seeds[0]
    worst_l, worst_f, strict, flat, lam_match = 0.0, 0.0, {}, {}, {}
    with enable_x64(True):
        datasets = {
            "mnist": load_data(res, "mnist", cfg, fallback=("fashion_mnist", "mnist1d")),
            "mnist1d": load_data(res, "mnist1d", cfg),
        }
        for dname, ds in datasets.items():
            label = data_label(dname, ds)
            res.series.setdefault("labels", {})[dname] = label
            x, y = _batch(ds, cfg.batch, seed)
            widths_by_h = cfg.mnist_widths if dname == "mnist" else cfg.mnist1d_widths
            for h in cfg.mnist_depths if dname == "mnist" else cfg.mnist1d_depths:
                widths = [x.shape[1]] + [widths_by_h[h - 1]] * h + [y.shape[1]]
                net = pcl.MLP(None, widths, "linear", init="zeros", dtype=jnp.float64)
                h_l = np.asarray(pcl.loss_hessian(net, x, y))
                worst_l = max(worst_l, float(np.max(np.abs(h_l - np.asarray(theory.loss_hessian_at_origin(widths, x, y))))))
                if h > 1:  # from autodiff, not from a closed form
                    flat[f"{label}_H{h}"] = float(np.max(np.abs(h_l)))
                del h_l
                h_f = np.asarray(pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear(method="activity"))))
                worst_f = max(worst_f, float(np.max(np.abs(h_f - np.asarray(theory.energy_hessian_at_origin(widths, x, y))))))
                op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=pcl.ExactLinear(method="activity")))
                ev, full = _spectrum(h_f, op, cfg.dense_spectrum_max_p)
                del h_f
                ev_th = np.asarray(theory.origin_spectrum(widths, x, y, "energy"))
                tag = f"{label}_H{h}"
                res.arrays[f"{tag}_eig_F"], res.arrays[f"{tag}_eig_F_theory"] = ev, ev_th
                res.series[f"{tag}_full_spectrum"] = full
                strict[tag] = float(ev[0])
                lam_match[tag] = abs(ev[0] - ev_th[0]) / abs(ev_th[0])
                if progress:
                    progress.update(1)
        res.add(claim("fig4.eq6", "Numerical loss Hessians at the origin equal Eq 6 entry by entry (MNIST, MNIST-1D)",
                      f"max abs diff <= {cfg.tol:g}", f"{worst_l:.2e}", worst_l <= cfg.tol))
        res.add(claim("fig4.eq8", "Hessians of the numerical F* (implicit, exact equilibrium) equal Eq 8 entry by entry",
                      f"max abs diff <= {cfg.tol:g}", f"{worst_f:.2e}", worst_f <= cfg.tol))
        res.add(claim("fig4.strict_F", "lambda_min(H_F*) < 0 at the origin for every H, equal to Eq 8's",
                      f"< 0 and rel. diff <= {cfg.lanczos_rtol:g}",
                      ", ".join(f"{k}: {fmt(v)} ({lam_match[k]:.1e})" for k, v in strict.items()),
                      all(v < 0 for v in strict.values()) and max(lam_match.values()) <= cfg.lanczos_rtol))
        if flat:
            res.add(claim("fig4.flat_L", "lambda_min(H_L) = 0 at the origin for H > 1 (the whole Hessian vanishes)",
                          "max |H_L| = 0 for the autodiff Hessian of the loss (every entry a product with a zero weight)", ", ".join(f"{k}: {fmt(v)}" for k, v in flat.items()), max(flat.values()) == 0.0))

        # beyond the paper: wide MNIST nets by Lanczos
        ds = datasets["mnist"]
        x, y = _batch(ds, cfg.batch, seed)
        wide = {}
        for h in cfg.wide_depths:
            widths = [x.shape[1]] + [cfg.wide_width] * h + [y.shape[1]]
            net = pcl.MLP(None, widths, "linear", init="zeros", dtype=jnp.float64)
            op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=pcl.ExactLinear(method="activity")))
            lz = pcl.lanczos(op, k=1, which="smallest")
            target = float(theory.origin_spectrum(widths, x, y, "energy")[0])
            wide[f"H{h}"] = (float(lz.eigenvalues[0]), target, op.size, lz.iterations)
            if progress:
                progress.update(1)
        rel = {k: abs(v[0] - v[1]) / abs(v[1]) for k, v in wide.items()}
        res.add(claim("fig4.wide_lanczos", f"Beyond the paper: lambda_min of the implicit H_F* of {cfg.wide_width}-wide {ds.name} nets "
                      "at the origin (Lanczos, p ~ 1e5) equals Eq 8's (-lambda_max(Sigma_yy) for H > 1)",
                      f"rel. diff <= {cfg.lanczos_rtol:g}",
                      ", ".join(f"{k} (p={v[2]}, {v[3]} its): {fmt(v[0], 8)} vs {fmt(v[1], 8)}" for k, v in wide.items()),
                      max(rel.values()) <= cfg.lanczos_rtol, category="finding"))
        res.series["wide"] = {k: {"lanczos": v[0], "theory": v[1], "p": v[2], "iterations": v[3]} for k, v in wide.items()}
    return res


def plot(res: Results) -> dict:
    from .plotting import new_figure, spectra

    cfg = res.config
    ncols = max(len(cfg.mnist_depths), len(cfg.mnist1d_depths))
    fig, axes = new_figure(2, ncols, size=(3.2, 2.6))
    for i, dname in enumerate(("mnist", "mnist1d")):
        depths = cfg.mnist_depths if dname == "mnist" else cfg.mnist1d_depths
        for j in range(len(depths), ncols):
            axes[i, j].axis("off")
        for j, h in enumerate(depths):
            label = res.series.get("labels", {}).get(dname, dname)
            tag = f"{label}_H{h}"
            full = res.series.get(f"{tag}_full_spectrum", True)
            spectra(axes[i, j], res.arrays[f"{tag}_eig_F"], res.arrays[f"{tag}_eig_F_theory"],
                    f"{label} H={h}" + ("" if full else " (Lanczos extremes)"), "numerical F*", "Eq 8")
            axes[i, j].axvline(0, color="grey", lw=0.5)
    fig.suptitle("Fig 4: energy Hessian eigenspectra at the origin, theory vs numerical", fontsize=10)
    fig.tight_layout()
    return {"fig4_spectra": fig}
