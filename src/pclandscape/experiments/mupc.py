"""Beyond the paper: deep residual PCNs under the muPC and the standard parameterisation.

muPC (Innocenti, Achour & Buckley, NeurIPS 2025, arXiv:2505.13124) trains residual PCNs of up
to 128 layers with Depth-muP scalings, reports that standard PCNs are hard to train at depth
(among other reasons, an activity Hessian that grows ill-conditioned with depth, which muPC
does not remove), and zero-shot transfer of the learning rate across depth. This experiment
measures these claims with this package's networks (``pcl.MLP(..., residual=True,
param=pcl.MuPC())`` or ``pcl.SP()``: identity skips between hidden layers, none from the input
or to the output) and its verified inference:

* **Accuracy against depth**: residual nets of ``depths`` weight layers and width ``width``,
  trained with PC and BP for ``steps`` SGD steps (default: one epoch), every learning rate of
  ``lrs`` in one ``pcl.train_many`` program per (activation, parameterisation, rule, depth)
  (the learning rate as each member's gradient scale). The test accuracy of each depth is
  reported at the learning rate that was best at ``tune_depth`` (zero-shot transfer) and at
  that depth's own best (a learning rate where the run diverged counts as accuracy 0: a
  non-finite value, or a batch loss above ``diverge_factor`` times its first, at which the
  run is stopped).
* **Conditioning**: the activity Hessian's condition number (``pcl.activity_spectrum`` on
  ``cond_batch`` test samples, at the feedforward activities; exact: dense, or bisection on
  the block-tridiagonal Hessian at depth) at initialisation and after
  PC training at the transferred learning rate.
* **The origin**: the smallest eigenvalue of the Hessian of the equilibrated energy ``F*``
  at ``W = 0`` (a critical point of ``F*`` for these nets: all errors vanish except the
  output's, which meets ``f(0) = 0``) by Lanczos on the implicit Hessian, for depths up to
  ``hessian_max_depth``.

**Protocol** (not the muPC paper's, which used Adam on the weights and ``T = L`` Euler steps
on the activities): Eqs 1 and 2 with the same ``1/(2N)``, plain SGD, PC's weight update at a
verified equilibrium (``pc_solver``: Newton to ``tol``), the largest inference residual
reported.

**Expectations, written before any run** (each a finding, reported as measured):

1. ``depth_stable``: with muPC, PC's test accuracy at the deepest depth (transferred lr) is at
   most 0.10 below the shallowest depth's.
2. ``sp_degrades``: with SP, PC's test accuracy at the deepest depth (its own best lr) is more
   than 0.10 below muPC's.
3. ``transfer``: with muPC, PC at the deepest depth reaches, at the learning rate tuned at
   ``tune_depth``, an accuracy at most 0.05 below that depth's best.
4. ``ill_conditioning``: SP's activity-Hessian condition number at initialisation grows with
   depth (deepest > shallowest), for every activation.
5. ``equilibrium``: every PC weight update was taken at a residual ``<= tol``; from VERSION 4
   also the residual of each PC run's final equilibrium evaluated in float64
   (:func:`pclandscape.verify_equilibrium`) is ``<= tol``.
6. ``origin_saddle``: ``lambda_min`` of ``F*``'s Hessian at the origin is negative (a strict
   saddle, as Theorem 3 shows for non-residual nets) at every depth measured, and the
   measured value (Lanczos on the implicit Hessian) equals the closed form
   :func:`pclandscape.theory.network_origin_spectrum` to 1e-3: two independent computations,
   so that a Lanczos run cut short (a random Rayleigh quotient near 0) cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pclandscape as pcl

from .base import (Results, checkpoint_path, claim, final_residuals, float64_finding, fmt, grid_batch_keys, grid_member,
                   load_data, residuals_reported, resumable_record, sgd)
from .solvers import SolverSpec

NAME = "mupc"
# 2: condition numbers above 2048 activities by bisection (exact), were Lanczos (float32, ~1 % off);
# 3: a run whose loss rises above diverge_factor x its first is stopped as diverged (before: trained on);
# 4: the equilibrium finding also checks the float64 residual of each PC member's final equilibrium
VERSION = 4
DESCRIPTION = ("Beyond the paper: residual PCNs of 8-128 layers under muPC vs SP, PC vs BP: accuracy against depth, "
               "learning-rate transfer, activity-Hessian conditioning, the saddle at the origin")

_FALLBACK = {"fashion_mnist": ("mnist", "mnist1d"), "mnist": ("fashion_mnist", "mnist1d")}
PARAMS = {"sp": pcl.SP, "mupc": pcl.MuPC, "ntp": pcl.NTP}


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0,)
    dataset: str = "fashion_mnist"
    depths: tuple = (8, 16, 32, 64, 128)  # weight layers L
    width: int = 128
    activations: tuple = ("tanh", "relu")
    params: tuple = ("sp", "mupc")
    rules: tuple = ("pc", "bp")
    batch: int = 64
    steps: int | None = None  # None: one epoch of the training set
    n_train: int | None = None  # None: the whole training set
    n_test: int | None = None
    # SGD on Eqs 1-2: muPC's output scaling 1/N asks for far larger steps than SP's
    lrs: tuple = (1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)
    tune_depth: int = 16
    # a run whose batch loss rises above this factor times its first is stopped as diverged (fair's
    # factor, which fair applies after its runs): an unstable learning rate can otherwise blow up for
    # over a hundred steps without a NaN, PC's inference at its iteration cap on each
    diverge_factor: float = 100.0
    pc_solver: SolverSpec = SolverSpec("newton", (("tol", 1e-5),))
    cond_batch: int = 8
    hessian_max_depth: int = 16
    hessian_batch: int = 64
    data_dir: str | None = None
    data_fallback: bool = True  # False: a missing data set is an error (CLI --no-fallback)


def quick_config() -> Config:
    """A 2-core-CPU variant: tanh only, depths 4, 8, 16 (the deepest tuned at 4), width 16,
    60 steps on 3840 training images, 6 learning rates a decade apart (SP's and muPC's best
    inside the grid), the Hessian at depth 4, 4 samples for the condition numbers."""
    return Config(depths=(4, 8, 16), width=16, activations=("tanh",), steps=60, n_train=3840, n_test=1000,
                  lrs=(0.003, 0.03, 0.3, 3.0, 30.0, 300.0), tune_depth=4, hessian_max_depth=4, hessian_batch=32, cond_batch=4)


def progress_total(cfg) -> int:
    return len(cfg.activations) * len(cfg.params) * len(cfg.depths) * (len(cfg.rules) + 1)


def _net(key, cfg, depth, act, param, d_in, d_out, init=None):
    """A residual MLP of ``depth`` weight layers (``init="zeros"``: the origin W = 0; key may be None)."""
    return pcl.MLP(key, [d_in] + [cfg.width] * (depth - 1) + [d_out], act, init=init, residual=True,
                   param=PARAMS[param]())


def _tag(act, param, depth) -> str:
    """A cell's name in the run's resume folder (its record, its grids' checkpoints)."""
    return f"{act}_{param}_L{depth}"


def _check(cfg):
    if cfg.tune_depth not in cfg.depths:
        raise ValueError(f"mupc: tune_depth={cfg.tune_depth} must be one of depths={cfg.depths}.")
    if min(cfg.depths) < 3:
        raise ValueError("mupc: depths must be >= 3 weight layers (a residual net needs two hidden layers).")
    bad = [p for p in cfg.params if p not in PARAMS]
    if bad:
        raise ValueError(f"mupc: unknown parameterisation(s) {bad}; choose from {', '.join(PARAMS)}.")
    bad = [r for r in cfg.rules if r not in ("pc", "bp")]
    if bad:
        raise ValueError(f"mupc: unknown rule(s) {bad}; choose from pc, bp.")


def run(cfg: Config, progress=None) -> Results:
    _check(cfg)
    res = Results(NAME, cfg)
    ds = load_data(res, cfg.dataset, cfg, fallback=_FALLBACK.get(cfg.dataset, ()))
    x, y = jnp.asarray(ds.x_train[: cfg.n_train]), jnp.asarray(ds.y_train[: cfg.n_train])
    xt, yt = jnp.asarray(ds.x_test[: cfg.n_test]), jnp.asarray(ds.y_test[: cfg.n_test])
    steps = cfg.steps or max(1, x.shape[0] // cfg.batch)
    n_lr, n_seed = len(cfg.lrs), len(cfg.seeds)
    member_lr = np.repeat(np.asarray(cfg.lrs, np.float64), n_seed)
    keys = grid_batch_keys(cfg.seeds, n_lr)
    init_keys = jnp.concatenate([jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))] * n_lr)
    solver = cfg.pc_solver.build(linear=False)
    cx, cy = xt[: cfg.cond_batch], yt[: cfg.cond_batch]
    acc, cond, residual, residual_lr, residual64, lam, lam_theory, diverged = {}, {}, {}, {}, {}, {}, {}, {}
    # the tuning depth first: the condition number after training is taken at the lr tuned there
    depths = sorted(cfg.depths, key=lambda d: d != cfg.tune_depth)
    for act in cfg.activations:
        for param in cfg.params:
            for depth in depths:
                tag = _tag(act, param, depth)
                tuned = None if depth == cfg.tune_depth else acc.get(f"{act}_{param}_L{cfg.tune_depth}/pc")
                ran = []

                def measure(depth=depth, param=param, act=act, tuned=tuned):
                    ran.append(tag)
                    return _cell(cfg, depth, act, param, (x, y), (xt, yt), (cx, cy), solver, steps,
                                 (keys, init_keys, member_lr), tuned, progress)

                # a finished cell survives an interrupt (kept in the run's resume folder): hours at 128 layers
                done = resumable_record(tag, measure)
                if not ran and progress:
                    progress.update(len(cfg.rules) + 1)
                cond[f"{tag}/init"] = done["cond_init"]
                if "cond_trained" in done:
                    cond[f"{tag}/trained"] = done["cond_trained"]
                for rule in cfg.rules:
                    acc[f"{tag}/{rule}"] = done["acc"][rule]
                    diverged[f"{tag}/{rule}"] = done["diverged"][rule]
                if "residual" in done:
                    residual[tag] = done["residual"]
                if "residual_lr" in done:  # (cells of runs before stop 31 lack it)
                    residual_lr[tag] = done["residual_lr"]
                if "residual64" in done:
                    residual64[tag] = done["residual64"]
                if "lambda_min_origin" in done:
                    lam[tag] = done["lambda_min_origin"]
                    zero = _net(None, cfg, depth, act, param, x.shape[1], y.shape[1], init="zeros")
                    hx, hy = x[: cfg.hessian_batch], y[: cfg.hessian_batch]
                    lam_theory[tag] = float(pcl.theory.network_origin_spectrum(zero, hx, hy)[0])
    res.series.update(accuracy=acc, condition=cond, max_inference_residual=residual,
                      max_inference_residual_lr=residual_lr, final_residual_float64=residual64, lambda_min_origin=lam,
                      lambda_min_origin_closed_form=lam_theory,
                      diverged=diverged, lrs=list(cfg.lrs), steps=steps)
    res.tables.append(_table(cfg, acc, cond, lam, ds.name, steps))
    _claims(cfg, res, acc, cond, residual, lam, lam_theory, residual_lr, residual64)
    kinked = [a for a in cfg.activations if _kinked_at_origin(cfg, min(cfg.depths), a, cfg.params[0], x.shape[1], y.shape[1])]
    if kinked and min(cfg.depths) <= cfg.hessian_max_depth:
        res.notes.append(f"The origin W = 0 is not analysed for {', '.join(kinked)} nets: there every activity of the "
                         "equilibrium sits at the activation's kink (z = 0), where F* is not twice differentiable.")
    res.notes.append(
        f"Protocol: SGD on Eqs 1 and 2 (the same 1/(2N)), {steps} steps of batch {cfg.batch}, PC at a verified "
        f"equilibrium ({cfg.pc_solver}); the muPC paper used Adam on the weights and T = L Euler steps on the "
        "activities. Accuracy 0 marks a learning rate at which the run diverged (a non-finite value, or a batch loss "
        f"above {cfg.diverge_factor:g} times its first, where the run was stopped).")
    return res


def _cell(cfg, depth, act, param, train, test, cond_data, solver, steps, members, tuned_accs, progress) -> dict:
    """One (activation, parameterisation, depth): the condition number at initialisation, each
    rule's accuracies (one per learning rate, averaged over seeds) and divergences, PC's largest
    inference residual and the condition number after PC training at the learning rate tuned at
    ``tune_depth`` (``tuned_accs``: that depth's PC accuracies; None at ``tune_depth`` itself),
    and the origin's lambda_min where ``depth <= hessian_max_depth``. JSON values throughout
    (:func:`resumable_record`)."""
    (x, y), (xt, yt) = train, test
    keys, init_keys, member_lr = members
    n_lr, n_seed = len(cfg.lrs), len(cfg.seeds)
    nets = eqx.filter_vmap(lambda k: _net(k, cfg, depth, act, param, x.shape[1], y.shape[1]))(init_keys)
    out = {"cond_init": _condition(grid_member(nets, 0), *cond_data), "acc": {}, "diverged": {}}
    for rule in cfg.rules:
        # the grid's steps advance the run's bar, between compiled calls of 10 steps (a call of 50 at 128
        # layers ran ~10 minutes without a line in the log)
        share = progress.share(1) if progress else False
        with residuals_reported():  # by the equilibrium finding
            trained, hists = pcl.train_many(
                nets, (x, y), rule=rule, optimizer=sgd(1.0), steps=steps, batch_size=cfg.batch, keys=keys,
                grad_scale=member_lr, progress=share, solver=solver if rule == "pc" else None,
                on_divergence="stop", steps_per_call=10, checkpoint=checkpoint_path(_tag(act, param, depth), rule),
                checkpoint_every=50, diverge_above=cfg.diverge_factor)
        bad = [bool("diverged_at" in h.meta or not np.all(np.isfinite(h.loss))) for h in hists]
        accs = [0.0 if b else float(pcl.evaluate(grid_member(trained, i), xt, yt)[1]) for i, b in enumerate(bad)]
        out["diverged"][rule] = bad
        out["acc"][rule] = np.asarray(accs).reshape(n_lr, n_seed).mean(1).tolist()
        if rule == "pc":
            r = {i: float(np.nanmax(h.inference_grad_norm)) for i, h in enumerate(hists) if "diverged_at" not in h.meta and len(h)}
            out["residual"] = max(r.values()) if r else float("nan")
            if r:  # the learning rate of the member with the largest residual
                out["residual_lr"] = float(cfg.lrs[max(r, key=r.get) // n_seed])
                # the float64 residual of each such member's equilibrium with its final weights (first batch)
                checks = final_residuals(trained, sorted(r), x[: cfg.batch], y[: cfg.batch], solver)
                out["residual64"] = max(c.residual for c in checks.values())
            tuned = _best(out["acc"]["pc"] if tuned_accs is None else tuned_accs)
            out["cond_trained"] = _condition(grid_member(trained, tuned * n_seed), *cond_data)
        if progress:
            share.finish()
    if depth <= cfg.hessian_max_depth and not _kinked_at_origin(cfg, depth, act, param, x.shape[1], y.shape[1]):
        out["lambda_min_origin"] = _origin_lambda_min(cfg, depth, act, param, x[: cfg.hessian_batch],
                                                      y[: cfg.hessian_batch])
    if progress:
        progress.update(1)
    return out


def _condition(net, x, y) -> float:
    """The largest activity-Hessian condition number over the samples (inf: not convex in z)."""
    spec = pcl.activity_spectrum(net, x, y)
    return float(jnp.max(spec.condition))


def _kinked_at_origin(cfg, depth, act, param, d_in, d_out) -> bool:
    """At W = 0 every activity of the equilibrium is 0 (no prediction but the skips, and the
    output no longer depends on z): for an activation with a kink at 0 (ReLU) F* is not twice
    differentiable there, so the origin's Hessian is not defined."""
    return pcl.kinks.kink_slopes(_net(None, cfg, depth, act, param, d_in, d_out, init="zeros")) is not None


def _origin_lambda_min(cfg, depth, act, param, x, y) -> float:
    net = _net(None, cfg, depth, act, param, x.shape[1], y.shape[1], init="zeros")
    op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=pcl.Newton(tol=1e-6)))
    return float(pcl.lanczos(op, k=1, which="smallest").eigenvalues[0])


def _best(accs) -> int:
    return int(np.argmax(accs))


def _table(cfg, acc, cond, lam, data, steps) -> dict:
    rows = []
    for act in cfg.activations:
        for param in cfg.params:
            tune = {r: acc.get(f"{act}_{param}_L{cfg.tune_depth}/{r}") for r in cfg.rules}
            for depth in cfg.depths:
                tag = _tag(act, param, depth)
                row = [act, param, str(depth)]
                for rule in cfg.rules:
                    a = acc[f"{tag}/{rule}"]
                    t = _best(tune[rule])
                    row += [f"{a[t]:.3f}", f"{max(a):.3f} (lr {fmt(cfg.lrs[_best(a)])})"]
                row += [_shown(cond.get(f"{tag}/init")), _shown(cond.get(f"{tag}/trained")), _shown(lam.get(tag))]
                rows.append(row)
    cols = ["activation", "param", "L"]
    for rule in cfg.rules:
        cols += [f"{rule.upper()} acc (lr tuned at L={cfg.tune_depth})", f"{rule.upper()} acc (own best lr)"]
    cols += ["cond(H_z) init", "cond(H_z) after PC", "lambda_min H_F* at W=0"]
    return {"title": f"Residual nets on {data}, width {cfg.width}, {steps} SGD steps, {len(cfg.seeds)} seed(s): test "
                     "accuracy, activity-Hessian condition number, lambda_min of F*'s Hessian at the origin",
            "columns": cols, "rows": rows}


def _shown(v) -> str:
    """A measured value, or "-" where it was not measured."""
    return "-" if v is None else fmt(v)


def _claims(cfg, res, acc, cond, residual, lam, lam_theory, residual_lr=None, residual64=None):
    lo, hi = min(cfg.depths), max(cfg.depths)
    for act in cfg.activations:
        if "pc" in cfg.rules and "mupc" in cfg.params:
            tune = _best(acc[f"{act}_mupc_L{cfg.tune_depth}/pc"])
            a_lo, a_hi = acc[f"{act}_mupc_L{lo}/pc"][tune], acc[f"{act}_mupc_L{hi}/pc"][tune]
            res.add(claim(f"{NAME}.depth_stable_{act}", f"muPC: PC trains {act} residual nets at every depth",
                          f"accuracy at L={hi} at most 0.10 below L={lo} (lr tuned at L={cfg.tune_depth})",
                          f"L={lo}: {a_lo:.3f}, L={hi}: {a_hi:.3f}", a_hi >= a_lo - 0.10, category="finding"))
            best_hi = acc[f"{act}_mupc_L{hi}/pc"]
            res.add(claim(f"{NAME}.transfer_{act}", f"muPC: the learning rate tuned at L={cfg.tune_depth} transfers "
                          f"to L={hi} ({act}, PC)", f"accuracy at the tuned lr at most 0.05 below L={hi}'s best",
                          f"tuned lr {fmt(cfg.lrs[tune])}: {best_hi[tune]:.3f}; best lr {fmt(cfg.lrs[_best(best_hi)])}: "
                          f"{max(best_hi):.3f}", best_hi[tune] >= max(best_hi) - 0.05, category="finding"))
        if "pc" in cfg.rules and {"sp", "mupc"} <= set(cfg.params):
            sp_acc = acc[f"{act}_sp_L{hi}/pc"]
            sp, mu = max(sp_acc), max(acc[f"{act}_mupc_L{hi}/pc"])
            statement = f"SP: PC trains {act} residual nets worse than muPC at the deepest depth"
            expected = f"SP's accuracy at L={hi} (own best lr) more than 0.10 below muPC's"
            measured = f"SP {sp:.3f} (lr {fmt(cfg.lrs[_best(sp_acc)])}), muPC {mu:.3f}"
            if len(cfg.lrs) > 1 and _best(sp_acc) in (0, len(cfg.lrs) - 1) and sp < mu - 0.10:
                # SP's best lies at an end of the grid: a learning rate beyond it may do better
                res.add(claim(f"{NAME}.sp_degrades_{act}", statement, expected, measured + "; undecided: SP's best "
                              "learning rate is at an end of the grid", None, category="skipped"))
            else:
                res.add(claim(f"{NAME}.sp_degrades_{act}", statement, expected, measured, sp < mu - 0.10,
                              category="finding"))
        if "sp" in cfg.params:
            c_lo, c_hi = cond[f"{act}_sp_L{lo}/init"], cond[f"{act}_sp_L{hi}/init"]
            statement = f"SP: the activity Hessian's condition number at initialisation grows with depth ({act})"
            expected = f"cond at L={hi} > cond at L={lo}"
            measured = f"L={lo}: {fmt(c_lo)}, L={hi}: {fmt(c_hi)}"
            if np.isinf(c_lo) and np.isinf(c_hi):  # H_z indefinite at both ends: no growth to compare
                res.add(claim(f"{NAME}.ill_conditioning_{act}", statement, expected, measured + " (H_z is not positive "
                              "definite at the feedforward activities: inf marks lambda_min <= 0)", None, category="skipped"))
            else:
                res.add(claim(f"{NAME}.ill_conditioning_{act}", statement, expected, measured, c_hi > c_lo,
                              category="finding"))
    if residual:
        tol = cfg.pc_solver.build(linear=False).tol
        worst = max(residual.values())
        # the recorded residual is recomputed after the solve, in float32: it may exceed the
        # solver's own stopping test by rounding (1.0000032e-5 for tol 1e-5 was seen)
        # and the float64 residual of the point itself at the end (float32's rounding of the residual
        # reaches 1e-5 on wide nets: benchmarks/residual_floor.py)
        text64, ok64 = float64_finding(residual64 or {}, residual, tol, digits=2)
        res.add(claim(f"{NAME}.equilibrium", "PC's weight updates were taken at a verified inference equilibrium",
                      f"largest residual max_i ||dF_i/dz_i|| over every step of every non-diverged PC run <= {tol:g} "
                      f"(to float32 rounding, 0.1 %), and the float64 residual (pcl.verify_equilibrium) of each such "
                      f"run's equilibrium with its final weights (first training batch) <= {tol:g}",
                      "; ".join(f"{k}: {v:.1e}" + (f" (lr {fmt(residual_lr[k])})" if v > tol * 1.001 and k in
                                                     (residual_lr or {}) else "") for k, v in residual.items())
                      + "; " + text64,
                      bool(np.isfinite(worst) and worst <= tol * 1.001 and ok64), category="finding"))
    if lam:
        # two computations: Lanczos on the implicit Hessian (autodiff through the equilibrium)
        # and theory.network_origin_spectrum (closed form); float32 products, hence 1e-3
        agree = {k: abs(v - lam_theory[k]) <= 1e-3 * abs(lam_theory[k]) for k, v in lam.items()}
        res.add(claim(f"{NAME}.origin_saddle", "The origin W = 0 is a strict saddle of F* for residual nets (Theorem 3 "
                      "covers non-residual nets)", "lambda_min of H_F* at W = 0 (Lanczos) < 0 at every depth measured, "
                      "and equal to the closed form (theory.network_origin_spectrum) to 1e-3 relative",
                      ", ".join(f"{k}: {v:.4g} (closed form {lam_theory[k]:.4g})" for k, v in lam.items()),
                      all(v < 0 and agree[k] for k, v in lam.items()), category="finding"))


def plot(res: Results) -> dict:
    from .plotting import BP_COLOR, PC_COLOR, new_figure

    cfg = res.config
    acc, cond = res.series["accuracy"], res.series["condition"]
    acts = list(cfg.activations)
    fig, axes = new_figure(len(acts), 2, size=(4.4, 3.2))
    styles = {"mupc": "-", "sp": "--", "ntp": ":"}
    for a_i, act in enumerate(acts):
        ax = axes[a_i, 0]
        for param in cfg.params:
            for rule in cfg.rules:
                tune = _best(acc[f"{act}_{param}_L{cfg.tune_depth}/{rule}"])
                ys = [acc[f"{act}_{param}_L{d}/{rule}"][tune] for d in cfg.depths]
                ax.plot(cfg.depths, ys, styles.get(param, "-"), marker="o", color=PC_COLOR if rule == "pc" else BP_COLOR,
                        label=f"{rule.upper()} {param}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("weight layers L")
        ax.set_ylabel(f"test accuracy (lr tuned at L={cfg.tune_depth})")
        ax.set_title(f"{act}: accuracy against depth", fontsize=8)
        ax.legend(fontsize=6)
        ax = axes[a_i, 1]
        for param in cfg.params:
            for when, marker in (("init", "o"), ("trained", "s")):
                ys = [cond.get(f"{act}_{param}_L{d}/{when}", np.nan) for d in cfg.depths]
                ax.plot(cfg.depths, ys, styles.get(param, "-"), marker=marker, label=f"{param} {when}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("weight layers L")
        ax.set_ylabel("condition number of H_z")
        ax.set_title(f"{act}: activity-Hessian conditioning", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return {"mupc_depth": fig}
