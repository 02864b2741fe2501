"""Fig 6: saddle-to-saddle dynamics in matrix completion; PC escapes every saddle BP visits.

A linear network (H = 3, width 100) fits a 10 x 10 rank-3 matrix with 20 % of its entries
hidden (after Jacot et al.), by full-batch gradient descent (lr 1e-2). Started near the
origin, BP visits saddles of rank 0, 1 and 2 (plateaus where the numerical rank of the
network map W_{L:1} is constant) before fitting the matrix. PC is started at each of these
points (the step of smallest gradient norm in each plateau) and the number of steps each rule
needs to halve the loss from there is compared. Beyond the paper, the exact critical point of
L nearest each of these points (Newton on the gradient; at the rank-0 plateau also the nearest
point with two zero layers, ``zero_layers_critical_point``) is classified with
``classify_critical_point`` for L and for F*.

**The paper's code** (``Matrix_Completion_Experiment.ipynb``), which the paper protocol
follows: the input of the network is the masked target matrix (hidden entries set to 0, one
row per sample), BP minimises ``MSELoss(output * mask, target * mask)`` (the mean over all
n^2 entries: 2/d_y times Eq 1 over the observed entries), and PC clamps its output to the
*full* target matrix, so PC's weight updates see the 20 % of entries BP never sees. The
weights start from ``N(0, 0.005^2)`` (the text says variance 5e-3; the code draws a standard
deviation of 5e-3), which is the default here.

**Initialisation.** With std 5e-3 BP dwells for tens of thousands of steps at the origin; the
quick config starts from std 0.02 (listed among its deviations), which shows the same saddles
within a few thousand steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import pclandscape as pcl

from .._compat import enable_x64
from .base import PROTOCOL_NOTE, Results, claim, escape_step, fmt, protocol_setup, sgd

NAME = "fig6"
VERSION = 3  # 2: the critical-point search lands on degenerate saddles and also stops on its Newton step;
# 3: at the rank-0 plateau the nearest point with two zero layers (an exact critical point) is a candidate too
DESCRIPTION = "Fig 6: matrix completion (rank 3): BP's saddle-to-saddle path; PC escapes each saddle BP visits"


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0,)
    n: int = 10
    rank: int = 3
    masked: float = 0.2
    hidden: int = 3
    width: int = 100
    lr: float = 1e-2
    init_std: float = 5e-3  # the notebook's INIT_SCALE (a standard deviation)
    bp_steps: int = 200_000  # at std 5e-3 BP reaches the rank-1 saddle after ~55,000 steps
    snapshot_every: int = 500
    pc_steps: int = 3000
    T: int = 50
    dt: float = 0.1
    rank_threshold: float = 0.5  # singular values of W_{L:1} above this count towards its rank
    escape_fraction: float = 0.5
    protocols: tuple = ("paper",)
    classify: bool = True


def quick_config() -> Config:
    """A 2-core-CPU variant: width 50, and (deviations) lr 5e-2 (5x the paper's) and init std
    0.02 (4x), which bring BP's saddles within 8,000 steps."""
    return Config(width=50, lr=0.05, init_std=0.02, bp_steps=8000, snapshot_every=200, pc_steps=400)


def progress_total(cfg) -> int:
    return len(cfg.seeds) * (1 + cfg.rank) * len(cfg.protocols)


def _network_map(net, x, y):
    """The network map W_{L:1} (its singular values, computed afterwards, give its rank)."""
    return net(jnp.eye(x.shape[1], dtype=x.dtype))


def _protocol_data(protocol, ds):
    """``(x, y_bp, y_pc)``: under "paper" the notebook's masked-matrix input and PC clamped to the
    full target; otherwise the one-hot inputs and the masked target for both rules."""
    y = np.asarray(ds.y_train)
    if protocol == "paper":
        full = np.asarray(ds.extras["M"]).T  # row j = column j of M, as y_train
        return jnp.asarray(np.where(np.isnan(y), 0.0, y)), jnp.asarray(y), jnp.asarray(full)
    return jnp.asarray(ds.x_train), jnp.asarray(y), jnp.asarray(y)


def _gd(net, data, rule, cfg, steps, scale, solver=None, metrics=None):
    return pcl.train(net, data, rule=rule, optimizer=sgd(cfg.lr), solver=solver, steps=steps, batch_size=data[0].shape[0],
                     grad_scale=scale, progress=False, steps_per_call=500, metrics=metrics)


def _bp_with_snapshots(net, data, cfg, scale):
    """BP by full-batch GD for ``cfg.bp_steps`` steps, keeping the weights every ``snapshot_every`` steps.

    Plain SGD has no optimiser state, so consecutive calls continue the same trajectory.
    """
    snapshots, parts = {0: net}, []
    for start in range(0, cfg.bp_steps, cfg.snapshot_every):
        n = min(cfg.snapshot_every, cfg.bp_steps - start)
        net, h = pcl.train(net, data, rule="bp", optimizer=sgd(cfg.lr), steps=n, batch_size=data[0].shape[0],
                           grad_scale=scale, progress=False, steps_per_call=n, metrics={"map": _network_map})
        snapshots[start + n] = net
        parts.append(h)
    cat = lambda name: np.concatenate([getattr(h, name) for h in parts])
    bp = pcl.History(rule="bp", loss=cat("loss"), grad_norm=cat("grad_norm"), energy=cat("energy"),
                     inference_grad_norm=cat("inference_grad_norm"),
                     extra={k: np.concatenate([h.extra[k] for h in parts]) for k in parts[0].extra})
    return bp, snapshots


def run(cfg: Config, progress=None) -> Results:
    res = Results(NAME, cfg)
    res.notes.append(PROTOCOL_NOTE)
    res.notes.append(__doc__.split("**Initialisation.**")[1].strip().replace("\n", " "))
    escapes, kinds = {}, {}
    for seed in cfg.seeds:
        ds = pcl.data.matrix_completion(seed, cfg.n, cfg.rank, cfg.masked)
        res.use_data(ds)
        widths = [cfg.n] + [cfg.width] * cfg.hidden + [cfg.n]
        net0 = pcl.MLP(jax.random.key(seed), widths, "linear", init_std=cfg.init_std)
        for protocol in cfg.protocols:
            x, y, y_pc = _protocol_data(protocol, ds)
            _, solver, bp_s, pc_s = protocol_setup(protocol, net0, cfg.n, cfg.dt, cfg.T)
            bp, snapshots = _bp_with_snapshots(net0, (x, y), cfg, bp_s)
            svs = np.linalg.svd(bp.extra["map"], compute_uv=False)  # (steps, n), on the host
            rank = (svs > cfg.rank_threshold).sum(1)
            tag0 = f"{protocol}_s{seed}"
            res.arrays[f"{tag0}_bp_loss"], res.arrays[f"{tag0}_bp_grad"], res.arrays[f"{tag0}_rank"] = bp.loss, bp.grad_norm, rank
            for k in range(cfg.rank):
                steps_k = np.nonzero(rank == k)[0]
                if steps_k.size < 10:
                    res.notes.append(f"{tag0}: BP did not dwell at a rank-{k} saddle (rank path {np.unique(rank).tolist()}).")
                    continue
                lo, hi = steps_k[0] + steps_k.size // 10, steps_k[-1] - steps_k.size // 10
                s = int(lo + np.argmin(bp.grad_norm[lo : hi + 1]))
                base = (s // cfg.snapshot_every) * cfg.snapshot_every  # GD is deterministic: replay from a snapshot
                saddle = snapshots[base] if s == base else _gd(snapshots[base], (x, y), "bp", cfg, s - base, bp_s)[0]
                # PC's loss as the notebook records it: on the observed entries (full batch: x is all of it)
                observed = {"observed_loss": lambda n, xb, yb, y=y: pcl.mse_loss(n, xb, y)}
                _, pc = _gd(saddle, (x, y_pc), "pc", cfg, cfg.pc_steps, pc_s, solver, metrics=observed)
                pc = dataclasses.replace(pc, loss=pc.extra["observed_loss"])
                bp_from = escape_step(bp.loss[s:], cfg.escape_fraction, window=1)
                pc_from = escape_step(pc.loss, cfg.escape_fraction, window=1)
                tag = f"{tag0}_rank{k}"
                escapes.setdefault(protocol, {})[tag] = (s, bp_from, pc_from)
                res.arrays[f"{tag}_pc_loss"], res.arrays[f"{tag}_pc_grad"] = pc.loss, pc.grad_norm
                if cfg.classify and protocol == cfg.protocols[0]:
                    kinds[tag] = _classify(saddle, x, y, k)
                if progress:
                    progress.update(1)
    for protocol, d in escapes.items():
        # BP never halving its loss in the steps it had left is censored: its time is >= those steps
        far = {k: p is not None and p <= 0.5 * (cfg.bp_steps - s if b is None else b) for k, (s, b, p) in d.items()}
        res.add(claim(f"fig6.escape_{protocol}", f"PC leaves each saddle BP visits in far fewer steps than BP took ({protocol} protocol)",
                      "steps to halve the loss from the saddle: PC <= half of BP's (BP censored at the steps it had left)",
                      ", ".join(f"{k} (BP step {s}): PC {fmt(p) if p is not None else f'>= {cfg.pc_steps}'} vs BP "
                                f"{fmt(b) if b is not None else f'>= {cfg.bp_steps - s}'}" for k, (s, b, p) in d.items()),
                      bool(d) and all(far.values()), category="paper" if protocol == "paper" else "finding"))
        ranks = sorted(int(k.rsplit("rank", 1)[1]) for k in d)
        res.add(claim(f"fig6.saddles_{protocol}", f"BP visits saddles of successive rank 0, 1, ..., {cfg.rank - 1} ({protocol} protocol)",
                      f"ranks {list(range(cfg.rank))} visited", f"ranks {ranks}", ranks == list(range(cfg.rank)),
                      category="paper" if protocol == "paper" else "finding"))
    if kinds:
        res.add(claim("fig6.classification", "Beyond the paper: the exact critical point of L nearest each plateau BP "
                      "visits (Newton on the gradient from the plateau point, float64; at the rank-0 plateau also the "
                      "nearest point with two zero layers, exact by construction), classified for L and for F* "
                      f"(critical: |grad| <= {_CRITICAL_TOL:g})",
                      "an exact critical point is found at every plateau (the search converges: |grad L| <= 1e-10 and "
                      "its next Newton step <= 1e-10 (1 + |theta|); or, at rank 0, two zero layers with |grad L| <= "
                      "1e-10 measured by autodiff); L: a saddle (strict or not); F*: a descent direction there (not "
                      "critical, or a strict saddle)",
                      "; ".join(f"{k}: search |g| {v['search'][1]:.1e} -> {v['search'][0]:.1e} in {v['search'][3]} its "
                                f"(Newton step {v['search'][6]:.1e}), moved {v['search'][2]:.2e}"
                                + (f"; two zero layers {v['zeroed'][0]}: |grad L| {v['zeroed'][2]:.1e}, moved "
                                   f"{v['zeroed'][1]:.2e}" if v.get("zeroed") else "")
                                + f"; classified at {v['at'][0]} (L = {v['at'][1]:.4g}): L {v['loss'][0]} "
                                f"(lambda_min={v['loss'][3]:.2e}, order {v['loss'][2]}), F* {v['energy'][0]} "
                                f"(|g|={v['energy'][1]:.1e}, lambda_min={v['energy'][3]:.2e})" for k, v in kinds.items()),
                      all(v["at"][2] and v["loss"][0] in ("strict_saddle", "non_strict_saddle")
                          and v["energy"][0] in ("not_critical", "strict_saddle") for v in kinds.values()), category="finding"))
    res.series = {"escapes": {p: {k: list(v) for k, v in d.items()} for p, d in escapes.items()},
                  "classification": {k: {o: list(c) for o, c in v.items()} for k, v in kinds.items()}}
    return res


def _classify(net, x, y, rank):
    """Find the exact critical point of L near BP's plateau point of map rank ``rank`` and
    classify it for L and for F* at a gradient tolerance fixed in advance (float64).

    Candidates: Newton on the gradient from the plateau point (``pcl.find_critical_point``,
    converged), and at rank 0 the nearest point with two zero layers
    (``pcl.zero_layers_critical_point``: exact, its gradient measured here); the nearer exact
    one is classified, else the search's end point (reported as such)."""
    with enable_x64(True):
        ws = [w.astype(jnp.float64) for w in pcl.weights(net)]
        x64, y64 = x.astype(jnp.float64), y.astype(jnp.float64)
        template = pcl.MLP.from_weights(ws)
        loss = lambda w: pcl.mse_loss(template.with_weights(w), x64, y64)  # noqa: E731
        found = pcl.find_critical_point(loss, ws, tol=1e-10, xtol=1e-10)
        searched = list(found.params)
        # (distance, where, weights, exact, L there)
        candidates = [(found.distance, "the search's end point", searched, bool(found.converged), float(loss(searched)))]
        out = {"search": (found.grad_norm, found.start_grad_norm, found.distance, found.iterations, bool(found.converged),
                          candidates[0][4], found.step_norm)}
        if rank == 0:
            zero = pcl.zero_layers_critical_point(template)
            zw = pcl.weights(zero.net)
            gz = float(jnp.linalg.norm(pcl.gradient(loss, zw)))
            layers = "W_{}, W_{}".format(*zero.layers)
            out["zeroed"] = (layers, zero.distance, gz)
            candidates.append((zero.distance, f"two zero layers ({layers})", zw, gz <= 1e-10, float(loss(zw))))
        exact = [c for c in candidates if c[3]]
        _, where, ws, is_exact, loss_there = min(exact, key=lambda c: c[0]) if exact else candidates[0]
        out["at"] = (where, loss_there, is_exact)
        at = template.with_weights(ws)
        fns = {
            "loss": loss,
            "energy": lambda w: pcl.infer(template.with_weights(w), x64, y64, pcl.ExactLinear(masked=True)).energy,
        }
        ops = {"loss": None, "energy": pcl.energy_hessian_operator(at, x64, y64, pcl.Implicit(solver=pcl.ExactLinear()))}
        for name, fn in fns.items():
            cp = pcl.classify_critical_point(fn, ws, tol=_CRITICAL_TOL, eig_tol=1e-6, max_order=4, n_directions=8,
                                             hessian=ops[name])
            out[name] = (cp.kind, cp.grad_norm, cp.order, cp.lambda_min, cp.lambda_max)
        return out


_CRITICAL_TOL = 1e-8  # |grad| below which a point counts as critical (fixed before any run)


def plot(res: Results) -> dict:
    from .plotting import BP_COLOR, PC_COLOR, new_figure

    cfg = res.config
    figs = {}
    for protocol in cfg.protocols:
        tag0 = f"{protocol}_s{cfg.seeds[0]}"
        if f"{tag0}_bp_loss" not in res.arrays:
            continue
        fig, axes = new_figure(2, 1, size=(7.0, 2.8))
        bp_loss, bp_grad = res.arrays[f"{tag0}_bp_loss"], res.arrays[f"{tag0}_bp_grad"]
        axes[0, 0].semilogy(bp_loss, color=BP_COLOR, label="BP")
        axes[1, 0].semilogy(bp_grad, color=BP_COLOR, label="BP")
        for tag, (s, b, p) in res.series["escapes"].get(protocol, {}).items():
            pc_loss = res.arrays[f"{tag}_pc_loss"]
            steps = np.arange(s, s + len(pc_loss))
            axes[0, 0].semilogy(steps, pc_loss, color=PC_COLOR, label="PC from the saddle" if tag.endswith("rank0") else None)
            axes[1, 0].semilogy(steps, res.arrays[f"{tag}_pc_grad"], color=PC_COLOR)
            for ax in axes[:, 0]:
                ax.axvline(s, color="grey", ls=":", lw=1)
            axes[0, 0].annotate(f"rank {tag.rsplit('rank', 1)[1]}", (s, bp_loss[s]), fontsize=7)
        axes[0, 0].set_ylabel("train loss")
        axes[1, 0].set_ylabel("weight-gradient norm")
        axes[1, 0].set_xlabel("GD step")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"Fig 6: matrix completion, BP from near 0 and PC from each saddle BP visits ({protocol} protocol)", fontsize=10)
        fig.tight_layout()
        figs[f"fig6_{protocol}"] = fig
    return figs
