"""Figs 3 and 8: Hessians of L and F* at the origin on the toy Gaussian, and linear chains.

For deep linear networks with 3-D inputs and outputs (``y = -x``, ``x ~ N(1, 0.1)``, and the
variant ``y_2 = x_2``) the numerical Hessians at ``theta = 0`` -- the loss by autodiff, ``F*``
by the exact implicit Hessian at the inference equilibrium and, as the paper did, by
autodiff through ``T = 50`` Euler steps -- are compared entry by entry with Eqs 6 and 8, and
their spectra with the closed-form ones; Fig 8 does the same for unit-width chains (Eqs
62-65).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

import pclandscape as pcl
from pclandscape import theory

from .._compat import enable_x64
from .base import Results, claim, fmt

NAME = "fig3"
DESCRIPTION = "Figs 3 & 8: Hessians of L and F* at the origin (toy Gaussian, chains) vs Eqs 6, 8, 62-65"


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0,)
    batch: int = 64  # "a random batch (size b = 64)"
    dim: int = 3  # 3-D input and output
    hidden_width: int = 3
    depths: tuple = (1, 2, 3)  # numbers of hidden layers H
    variants: tuple = ("y=-x", "y2=x2")
    chain_depths: tuple = (1, 2, 3)
    unrolled_steps: int = 50  # the paper's T = 50 (Euler, dt = 0.1)
    unrolled_dt: float = 0.1
    tol: float = 1e-10  # entry-wise agreement (float64)


def quick_config() -> Config:
    """The paper's settings: these tiny Hessians are cheap on any CPU."""
    return Config()


def _data(cfg, seed, variant, dim):
    ds = pcl.data.toy_gaussian(seed, n_train=cfg.batch, n_test=1, dim=dim, variant=None if variant == "y=-x" else variant)
    return jnp.asarray(ds.x_train, jnp.float64), jnp.asarray(ds.y_train, jnp.float64), ds


def _hessians(widths, x, y, cfg):
    net = pcl.MLP(None, widths, "linear", init="zeros", dtype=jnp.float64)
    return {
        "L": np.asarray(pcl.loss_hessian(net, x, y)),
        "F_implicit": np.asarray(pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear(method="activity")))),
        "F_unrolled": np.asarray(
            pcl.energy_hessian(net, x, y, pcl.Unrolled(solver=pcl.Euler(dt=cfg.unrolled_dt, steps=cfg.unrolled_steps)))
        ),
        "eq6": np.asarray(theory.loss_hessian_at_origin(widths, x, y)),
        "eq8": np.asarray(theory.energy_hessian_at_origin(widths, x, y)),
    }


def run(cfg: Config, progress=None) -> Results:
    res = Results(NAME, cfg)
    seed = cfg.seeds[0]
    with enable_x64(True):
        worst = {"L": 0.0, "F": 0.0, "unrolled": 0.0, "eq8_scale": 0.0}
        lam = {}
        for variant in cfg.variants:
            x, y, ds = _data(cfg, seed, variant, cfg.dim)
            res.use_data(ds)
            for h in cfg.depths:
                widths = [cfg.dim] + [cfg.hidden_width] * h + [cfg.dim]
                hs = _hessians(widths, x, y, cfg)
                key = f"{variant}_H{h}"
                for k, v in hs.items():
                    res.arrays[f"{key}_{k}"] = v
                ev_l = np.linalg.eigvalsh(hs["L"])
                ev_f = np.linalg.eigvalsh(hs["F_implicit"])
                res.arrays[f"{key}_eig_L"], res.arrays[f"{key}_eig_F"] = ev_l, ev_f
                res.arrays[f"{key}_eig_F_theory"] = np.asarray(theory.origin_spectrum(widths, x, y, "energy"))
                res.arrays[f"{key}_eig_L_theory"] = np.asarray(theory.origin_spectrum(widths, x, y, "loss"))
                worst["L"] = max(worst["L"], float(np.max(np.abs(hs["L"] - hs["eq6"]))))
                worst["F"] = max(worst["F"], float(np.max(np.abs(hs["F_implicit"] - hs["eq8"]))))
                worst["unrolled"] = max(worst["unrolled"], float(np.max(np.abs(hs["F_unrolled"] - hs["eq8"]))))
                worst["eq8_scale"] = max(worst["eq8_scale"], float(np.max(np.abs(hs["eq8"]))))
                lam[key] = (float(ev_l[0]), float(ev_f[0]), h)
                if progress:
                    progress.update(1)
        res.add(claim("fig3.eq6", "The numerical loss Hessian at the origin equals Eq 6 entry by entry",
                      f"max |H_L - Eq6| <= {cfg.tol:g}", f"{worst['L']:.2e}", worst["L"] <= cfg.tol))
        res.add(claim("fig3.eq8", "The Hessian of the numerical F* (exact equilibrium, implicit) equals Eq 8 entry by entry",
                      f"max |H_F* - Eq8| <= {cfg.tol:g}", f"{worst['F']:.2e}", worst["F"] <= cfg.tol))
        # At the origin the activity Hessian is I, so T Euler steps give dz/dtheta with the factor
        # 1 - (1 - dt)^T in place of 1; the Hessian of F(z_T(theta)) then misses Eq 8 by
        # (1 - dt)^(2T) times the implicit correction term, whose entries are O(max |Eq 8|) here.
        bound = 2.0 * (1.0 - cfg.unrolled_dt) ** (2 * cfg.unrolled_steps) * max(worst["eq8_scale"], 1.0)
        res.add(claim("fig3.unrolled", f"Autodiff through T = {cfg.unrolled_steps} Euler steps (the paper's method) approximates Eq 8",
                      f"max |H - Eq8| <= 2 (1 - dt)^(2T) max(|Eq8|, 1) = {bound:.1e} (the error of T steps of a unit-Hessian "
                      "gradient flow)", f"max |H - Eq8| = {worst['unrolled']:.2e}",
                      worst["unrolled"] <= bound, category="finding"))
        neg = {k: v[1] for k, v in lam.items()}
        res.add(claim("fig3.strict_F", "lambda_min(H_F*) < 0 at the origin for every H (Theorem 2)",
                      "all < 0", ", ".join(f"{k}: {fmt(v)}" for k, v in neg.items()), all(v < 0 for v in neg.values())))
        deep = {k: v[0] for k, v in lam.items() if v[2] > 1}
        res.add(claim("fig3.flat_L", "lambda_min(H_L) = 0 at the origin for H > 1 (Eq 7)",
                      "|lambda_min| <= 1e-12", ", ".join(f"{k}: {fmt(v)}" for k, v in deep.items()),
                      all(abs(v) <= 1e-12 for v in deep.values())))
        shallow = {k: v[0] for k, v in lam.items() if v[2] == 1}
        if shallow:
            res.add(claim("fig3.strict_L_H1", "lambda_min(H_L) < 0 at the origin for H = 1 (strict saddle)",
                          "all < 0", ", ".join(f"{k}: {fmt(v)}" for k, v in shallow.items()),
                          all(v < 0 for v in shallow.values())))

        # Fig 8: chains
        x1, y1, ds1 = _data(cfg, seed, "y=-x", 1)
        res.use_data(ds1)
        chain_err, eig_err, eq64, eq65 = 0.0, 0.0, True, True
        for h in cfg.chain_depths:
            widths = [1] * (h + 2)
            hs = _hessians(widths, x1, y1, cfg)
            h_l, h_f = theory.chain_hessians_at_origin(h, x1, y1)
            ev_l, ev_f = theory.chain_eigenvalues_at_origin(h, x1, y1)
            chain_err = max(chain_err, float(np.max(np.abs(hs["L"] - np.asarray(h_l)))), float(np.max(np.abs(hs["F_implicit"] - np.asarray(h_f)))))
            num_l, num_f = np.linalg.eigvalsh(hs["L"]), np.linalg.eigvalsh(hs["F_implicit"])
            eig_err = max(eig_err, float(np.max(np.abs(num_l - np.asarray(ev_l)))), float(np.max(np.abs(num_f - np.asarray(ev_f)))))
            res.arrays[f"chain_H{h}_L"], res.arrays[f"chain_H{h}_F"] = hs["L"], hs["F_implicit"]
            res.arrays[f"chain_H{h}_eig_F_theory"], res.arrays[f"chain_H{h}_eig_L_theory"] = np.asarray(ev_f), np.asarray(ev_l)
            if h == 1:
                eq64 = bool(np.all(num_f < num_l))
            else:
                eq65 = abs(num_f[0] + float(jnp.mean(y1**2))) <= 1e-12
        res.add(claim("fig8.eq62_63", "Chain Hessians at the origin equal Eqs 62-63 entry by entry",
                      f"max abs diff <= {cfg.tol:g}", f"{chain_err:.2e}", chain_err <= cfg.tol))
        res.add(claim("fig8.eigenvalues", "Chain eigenvalues equal the closed forms (Eqs 63-65); for H = 1 energy < loss (Eq 64); "
                      "lambda_min = -y^2 for H > 1 (Eq 65)", f"max abs diff <= {cfg.tol:g}, Eq 64 and Eq 65 hold",
                      f"{eig_err:.2e}; Eq 64: {eq64}; Eq 65: {eq65}", eig_err <= cfg.tol and eq64 and eq65))
    res.series["lambda_min"] = {k: {"loss": v[0], "energy": v[1]} for k, v in lam.items()}
    return res


def plot(res: Results) -> dict:
    from .plotting import heatmap, new_figure, spectra

    cfg = res.config
    figs = {}
    for variant in cfg.variants:
        fig, axes = new_figure(2, len(cfg.depths), size=(2.6, 2.6))
        for j, h in enumerate(cfg.depths):
            key = f"{variant}_H{h}"
            heatmap(axes[0, j], res.arrays[f"{key}_L"], f"$H_\\mathcal{{L}}(0)$, H={h}")
            heatmap(axes[1, j], res.arrays[f"{key}_F_implicit"], f"$H_{{F^*}}(0)$, H={h}")
        fig.suptitle(f"Fig 3: Hessians at the origin, toy Gaussian ({variant}), normalised to [-1, 1]", fontsize=10)
        fig.tight_layout()
        figs[f"fig3_hessians_{variant.replace('=', '').replace('-', 'm')}"] = fig
        fig, axes = new_figure(1, len(cfg.depths), size=(3.2, 2.6))
        for j, h in enumerate(cfg.depths):
            key = f"{variant}_H{h}"
            spectra(axes[0, j], res.arrays[f"{key}_eig_F"], res.arrays[f"{key}_eig_F_theory"], f"F* spectrum, H={h}",
                    "numerical (implicit)", "Eq 8")
            axes[0, j].axvline(0, color="grey", lw=0.5)
        fig.suptitle(f"Fig 3: energy Hessian eigenspectra at the origin ({variant}): theory vs numerical", fontsize=10)
        fig.tight_layout()
        figs[f"fig3_spectra_{variant.replace('=', '').replace('-', 'm')}"] = fig
    fig, axes = new_figure(2, len(cfg.chain_depths), size=(2.4, 2.4))
    for j, h in enumerate(cfg.chain_depths):
        heatmap(axes[0, j], res.arrays[f"chain_H{h}_L"], f"chain $H_\\mathcal{{L}}(0)$, H={h}")
        heatmap(axes[1, j], res.arrays[f"chain_H{h}_F"], f"chain $H_{{F^*}}(0)$, H={h}")
    fig.suptitle("Fig 8: linear chains (unit width) at the origin", fontsize=10)
    fig.tight_layout()
    figs["fig8_chains"] = fig
    return figs
