"""Figs 2 and 7: toy landscapes of L and F* around the origin, SGD paths, escape times.

Linear networks on the toy regression ``y = -x``, ``x ~ N(1, 0.1)``: chains with one and two
hidden units (H = 1, 2) and one wider network, started near the origin and trained by BP and
PC with SGD. The loss and equilibrated-energy landscapes are sampled on 30 x 30 grids (the
H = 1 chain in its own weights, the others on the plane of the extreme eigenvectors of the
F* Hessian at 0, following §A.4), with the SGD paths drawn on them; Fig 7 gives train/test
loss and gradient-norm statistics over 5 seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import pclandscape as pcl
from pclandscape import landscape, theory

from .base import PROTOCOL_NOTE, Results, claim, escape_step, fmt, protocol_setup, sgd

NAME = "fig2"
DESCRIPTION = "Figs 2 & 7: landscapes of L and F* near the origin (toy), SGD paths, escape times over seeds"


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0, 1, 2, 3, 4)
    n_train: int = 1024
    n_test: int = 256
    batch: int = 64
    chain_depths: tuple = (1, 2)
    chain_init_std: float = 0.05  # the chains notebook's WEIGHT_SCALE, a std (the text: sigma^2 = 5e-2)
    chain_lr: float = 0.4
    chain_T: int = 20  # Euler inference steps (dt = 0.1) for the chains
    chain_steps: int = 200
    wide_widths: tuple = (1, 10, 10, 1)
    wide_init_std: float = 0.1**0.5  # sigma^2 = 1e-1
    wide_lr: float = 1e-3
    wide_T: int = 50
    wide_steps: int = 3000
    protocols: tuple = ("paper",)  # for the wide network (the chains use Eqs 1-2 as written)
    wide_seeds: tuple | None = None  # default: seeds
    dt: float = 0.1
    resolution: int = 30
    escape_fraction: float = 0.5
    eval_every: int = 25


def quick_config() -> Config:
    """A 2-core-CPU variant: 100 / 400 training steps (chains / wide net; the paper's 200 /
    3000), 3 seeds for the wide net (5) and 20 x 20 landscapes (30 x 30)."""
    return Config(chain_steps=100, wide_steps=400, wide_seeds=(0, 1, 2), resolution=20)


def _wide_seeds(cfg):
    return cfg.seeds if cfg.wide_seeds is None else cfg.wide_seeds


def progress_total(cfg) -> int:
    return len(cfg.seeds) * len(cfg.chain_depths) + len(_wide_seeds(cfg)) * len(cfg.protocols)


def _nets(cfg):
    nets = [(f"chain_H{h}", [1] * (h + 2), cfg.chain_init_std, cfg.chain_lr, cfg.chain_T, cfg.chain_steps, ("eqs",), cfg.seeds)
            for h in cfg.chain_depths]
    nets.append(("wide", list(cfg.wide_widths), cfg.wide_init_std, cfg.wide_lr, cfg.wide_T, cfg.wide_steps, cfg.protocols,
                 _wide_seeds(cfg)))
    return nets


def _projector(direction):
    """``net -> <flat weights, direction>`` (jitted: it runs on every training step)."""

    @jax.jit
    def project(net, x, y):
        return jnp.concatenate([w.reshape(-1) for w in net.weights]) @ direction

    return project


def _plane(tag, widths, x, y):
    """Directions of the landscape plane and whether they are the raw weights (H = 1 chain)."""
    zeros = [jnp.zeros((o, i)) for i, o in zip(widths[:-1], widths[1:])]
    if tag == "chain_H1":
        return [jnp.array([[1.0]]), jnp.array([[0.0]])], [jnp.array([[0.0]]), jnp.array([[1.0]])], zeros
    v_min, v_max = landscape.hessian_directions(lambda w: theory.equilibrated_energy(w, x, y), zeros)
    return v_min, v_max, zeros


def run(cfg: Config, progress=None) -> Results:
    res = Results(NAME, cfg)
    res.notes.append(PROTOCOL_NOTE)
    res.notes.append("Initialisation of the chains follows the paper's code (Linear_Chains_Analysis: "
                     "np.random.normal(0, WEIGHT_SCALE = 5e-2), a standard deviation); the text reads sigma^2 = 5e-2.")
    res.notes.append("The chains are trained on Eqs 1 and 2 as written (unit gradient scales, per-sample Euler inference, "
                     "tag 'eqs'), at one learning rate for both rules; the protocols apply to the wide network. Escape "
                     "times of runs that never escape are censored at the step budget and reported as bounds.")
    esc = {}
    for tag, widths, std, lr, T, steps, protocols, seeds in _nets(cfg):
        ds = pcl.data.toy_gaussian(0, cfg.n_train, cfg.n_test, dim=widths[0])
        res.use_data(ds)
        x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
        xb, yb = x[: cfg.batch], y[: cfg.batch]
        d1, d2, zeros = _plane(tag, widths, xb, yb)
        flat1 = jnp.concatenate([a.reshape(-1) for a in d1])
        flat2 = jnp.concatenate([a.reshape(-1) for a in d2])
        proj = {"alpha": _projector(flat1), "beta": _projector(flat2)}
        span = 2.0 if tag == "chain_H2" else 1.0
        net0 = pcl.MLP(None, widths, "linear", init="zeros")
        loss_fn = lambda w: pcl.mse_loss(net0.with_weights(w), xb, yb)
        energy_fn = lambda w: pcl.infer(net0.with_weights(w), xb, yb, pcl.ExactLinear(method="activity")).energy
        sl = landscape.slice_2d(loss_fn, zeros, (d1, d2), span=span, resolution=cfg.resolution)
        se = landscape.slice_2d(energy_fn, zeros, (d1, d2), span=span, resolution=cfg.resolution)
        res.arrays[f"{tag}_grid"] = sl.alphas
        res.arrays[f"{tag}_loss_landscape"], res.arrays[f"{tag}_energy_landscape"] = sl.values, se.values
        for protocol in protocols:
            for rule in ("bp", "pc"):
                runs = {"loss": [], "test": [], "grad": [], "alpha": [], "beta": [], "escape": []}
                for seed in seeds:
                    net = pcl.MLP(jax.random.key(seed), widths, "linear", init_std=std)
                    if protocol == "eqs":
                        solver, bp_s, pc_s = pcl.Euler(dt=cfg.dt, steps=T), 1.0, 1.0
                    else:
                        _, solver, bp_s, pc_s = protocol_setup(protocol, net, cfg.batch, cfg.dt, T)
                    _, hist = pcl.train(
                        net, (x, y), rule=rule, optimizer=sgd(lr), solver=solver if rule == "pc" else None,
                        steps=steps, batch_size=cfg.batch, key=jax.random.key(seed + 100), eval_data=(ds.x_test, ds.y_test),
                        eval_every=cfg.eval_every, grad_scale=bp_s if rule == "bp" else pc_s, progress=False, metrics=proj,
                    )
                    runs["loss"].append(hist.loss)
                    runs["test"].append(hist.test_loss)
                    runs["grad"].append(hist.grad_norm)
                    runs["alpha"].append(hist.extra["alpha"])
                    runs["beta"].append(hist.extra["beta"])
                    runs["escape"].append(escape_step(hist.loss, cfg.escape_fraction))
                    if progress and rule == "pc":
                        progress.update(1)
                key = f"{tag}_{protocol}_{rule}"
                for k in ("loss", "test", "grad", "alpha", "beta"):
                    res.arrays[f"{key}_{k}"] = np.stack(runs[k])
                res.arrays[f"{key}_eval_step"] = hist.eval_step
                esc[key] = runs["escape"]
    res.series["escape_steps"] = esc

    def med(key, budget):
        """Mean escape step over seeds (BP and PC share inits and batches), a run that never
        escapes counted at the budget, and whether that makes the mean a lower bound."""
        vals = esc[key]
        return float(np.mean([budget if v is None else v for v in vals])), any(v is None for v in vals)

    def show(v, censored):
        return f">= {fmt(v)}" if censored else fmt(v)

    gaps = {}
    for h in cfg.chain_depths:
        (bp, bp_c), (pc, pc_c) = med(f"chain_H{h}_eqs_bp", cfg.chain_steps), med(f"chain_H{h}_eqs_pc", cfg.chain_steps)
        gaps[h] = (bp - pc, bp_c, pc_c)  # a lower bound when BP is censored, an upper one when PC is
        ok = None if pc_c else pc < bp  # PC censored: its true mean is unknown
        res.add(claim(f"fig2.chain_H{h}", f"PC escapes the origin of the H = {h} chain in fewer SGD steps than BP",
                      "mean escape step PC < BP (loss below half its plateau; same inits; runs that never escape "
                      "counted at the budget, making the mean a lower bound)",
                      f"PC {show(pc, pc_c)} vs BP {show(bp, bp_c)} (of {cfg.chain_steps})", ok))
    hs = sorted(cfg.chain_depths)
    pairs = list(zip(hs, hs[1:]))
    # gap(b) > gap(a) is shown only when gap(b) is not an upper bound and gap(a) is not a lower bound
    decidable = all(not gaps[b][2] and not gaps[a][1] for a, b in pairs)
    grows = all(gaps[a][0] < gaps[b][0] for a, b in pairs)
    res.add(claim("fig2.gap_grows", "The gap between BP and PC escape times grows with depth",
                  "gap(H=2) > gap(H=1), with censored runs bounding the gaps (undecidable when the bounds point the wrong way)",
                  ", ".join(f"H={h}: {'>= ' if gaps[h][1] else ('<= ' if gaps[h][2] else '')}{fmt(gaps[h][0])}" for h in hs),
                  grows if decidable else None))
    for protocol in cfg.protocols:
        (bp, bp_c), (pc, pc_c) = med(f"wide_{protocol}_bp", cfg.wide_steps), med(f"wide_{protocol}_pc", cfg.wide_steps)
        res.add(claim(f"fig2.wide_{protocol}", f"Wide network ({protocol} protocol): PC escapes the origin before BP",
                      "mean escape step PC < BP", f"PC {show(pc, pc_c)} vs BP {show(bp, bp_c)} (of {cfg.wide_steps} steps)",
                      None if pc_c else pc < bp, category="paper" if protocol == "paper" else "finding"))
    return res


def plot(res: Results) -> dict:
    from .plotting import BP_COLOR, PC_COLOR, curves, new_figure

    cfg = res.config
    tags = [f"chain_H{h}" for h in cfg.chain_depths] + ["wide"]
    proto = {t: "eqs" if t.startswith("chain") else cfg.protocols[0] for t in tags}
    fig, axes = new_figure(3, len(tags), size=(3.4, 3.0))
    for j, tag in enumerate(tags):
        g = res.arrays[f"{tag}_grid"]
        for i, (what, rule, color) in enumerate((("loss", "bp", BP_COLOR), ("energy", "pc", PC_COLOR))):
            ax = axes[i, j]
            vals = res.arrays[f"{tag}_{what}_landscape"]
            spread = float(np.ptp(vals))
            if spread <= 1e-9 * max(1.0, float(np.abs(vals).max())):  # flat: no second-order term (H > 1, Eq 6)
                ax.imshow(np.full_like(vals, 0.5), extent=(g[0], g[-1], g[0], g[-1]), origin="lower", cmap="viridis",
                          vmin=0, vmax=1, aspect="auto")
                ax.text(0.5, 0.1, f"flat: {float(vals.mean()):.4g}\n(range {spread:.0e})", transform=ax.transAxes,
                        ha="center", fontsize=7, color="white")
            else:
                cs = ax.contourf(g, g, vals, levels=30, cmap="viridis")
                cb = fig.colorbar(cs, ax=ax, fraction=0.046)
                cb.formatter.set_useOffset(False)
                cb.update_ticks()
            a, b = res.arrays[f"{tag}_{proto[tag]}_{rule}_alpha"][0], res.arrays[f"{tag}_{proto[tag]}_{rule}_beta"][0]
            ax.plot(a, b, ".-", color="white", ms=2, lw=0.6)
            ax.plot(a[:1], b[:1], "o", color=color, ms=4)
            ax.set_xlim(g[0], g[-1])
            ax.set_ylim(g[0], g[-1])
            axis = ("$w_1$", "$w_2$") if tag == "chain_H1" else ("$v_{min}$", "$v_{max}$")
            ax.set_xlabel(axis[0])
            ax.set_ylabel(axis[1])
            symbol = "$\\mathcal{L}$" if what == "loss" else "$F^*$"
            ax.set_title(f"{tag}: {symbol} + {rule.upper()} path", fontsize=9)
        curves(axes[2, j], {"BP": res.arrays[f"{tag}_{proto[tag]}_bp_loss"][:1], "PC": res.arrays[f"{tag}_{proto[tag]}_pc_loss"][:1]},
               colors={"BP": BP_COLOR, "PC": PC_COLOR})
        axes[2, j].set_title(f"{tag} ({proto[tag]}), seed {cfg.seeds[0]}", fontsize=9)
    fig.suptitle("Fig 2: loss and equilibrated-energy landscapes near the origin, SGD paths and losses", fontsize=10)
    fig.tight_layout()
    figs = {"fig2_landscapes": fig}

    fig, axes = new_figure(len(tags), 3, size=(3.4, 2.6))
    for i, tag in enumerate(tags):
        p = proto[tag]
        for j, (k, lab) in enumerate((("loss", "train loss"), ("test", "test loss"), ("grad", "gradient norm"))):
            arrs = {"BP": res.arrays[f"{tag}_{p}_bp_{k}"], "PC": res.arrays[f"{tag}_{p}_pc_{k}"]}
            curves(axes[i, j], arrs, ylabel=lab, xlabel="evaluation" if k == "test" else "step",
                   colors={"BP": BP_COLOR, "PC": PC_COLOR})
            axes[i, j].set_title(f"{tag} ({p}), mean +- sd over {len(cfg.seeds)} seeds", fontsize=8)
    fig.tight_layout()
    figs["fig7_statistics"] = fig
    return figs
