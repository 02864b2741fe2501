"""The training drivers: :func:`train` (one network; fused or step-by-step loop) and
:func:`train_many` (a seed axis as one computation). Both record through one
:class:`~pclandscape.training._recorder.Recorder`."""

from __future__ import annotations

import math
import os
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from .._checks import positive_int, positive_number
from .._progress import Share, progress_bar
from ..inference import AbstractSolver, default_solver
from ..inference._infer import resolve_solver
from ..networks import PCNetwork
from ._batches import batch_sharding, check_finite, device_data, index_stream, is_array_pair, iter_batches
from ._fused import jit_step_ok, run_steps, run_steps_many
from ._history import History
from ._recorder import Recorder, host_row, read_checkpoint, write_checkpoint
from ._steps import BP, DEFAULT_OPTIMIZER, PC, as_rule, bp_step, diverged_message, init_opt_state, pc_step, scalar

__all__ = ["train", "train_many"]


def train(
    net: PCNetwork,
    data,
    *,
    rule: PC | BP | str = "pc",
    optimizer: optax.GradientTransformation | None = None,
    solver: AbstractSolver | None = None,
    steps: int,
    until_loss: float | None = None,
    batch_size: int = 64,
    key: PRNGKeyArray | None = None,
    eval_data: tuple[Array, Array] | None = None,
    eval_every: int | None = None,
    grad_scale: float = 1.0,
    progress: bool | None | Share = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    meta: dict | None = None,
    metrics: dict | None = None,
    steps_per_call: int = 32,
    data_parallel: bool | None = None,
) -> tuple[PCNetwork, History]:
    """Train ``net`` with backprop (``rule="bp"``) or predictive coding (``rule="pc"``).

    Args:
        net: the network to train.
        data: ``(x, y)`` arrays (cut into shuffled batches of ``batch_size``, a new seeded
            permutation every epoch, incomplete last batch dropped) or any re-iterable of
            ``(x, y)`` batches.
        rule: ``pcl.PC(solver=...)`` (predictive coding, the default) or ``pcl.BP()``
            (backprop); ``"pc"`` (with ``solver=`` beside it) and ``"bp"`` are shorthands.
        optimizer: an optax optimizer (default ``optax.sgd(1e-3)``, the paper's). The compiled
            training loop is cached on the optimizer object: pass the same object to later
            calls (not a fresh ``optax.sgd(lr)`` each time) to skip recompilation.
        solver: with ``rule="pc"``, its inference solver (default
            :func:`pclandscape.default_solver`); an error with backprop, which runs none.
        steps: maximum number of weight updates.
        until_loss: stop early once the batch loss (Eq 1) falls below this value.
        batch_size: batch size when ``data`` is a pair of arrays.
        key: PRNG key for shuffling (None: no shuffling).
        eval_data: ``(x_test, y_test)`` evaluated every ``eval_every`` steps and at the end.
        eval_every: evaluation period in steps (default: only at the start and the end).
        grad_scale: factor applied to the gradient (see the module docstring).
        progress: show a progress bar (default: when stderr is a terminal), or a share of a
            caller's bar (``Progress.share``, as the experiments pass): the caller's bar then
            advances with the training steps.
        checkpoint: file to save ``(net, opt_state, history)`` to every
            ``checkpoint_every`` steps and at the end; if it exists, training resumes from
            it (with the same data order when ``data`` is arrays and ``key`` is given).
        meta: extra JSON-serialisable settings stored in ``History.meta``.
        metrics: ``{name: fn(net, x, y) -> scalar}`` evaluated on every batch before the
            update and stored in ``History.extra[name]`` (e.g. the closed-form F* of Fig 1).
            With array data they run inside the fused steps, so they must be JAX-traceable.
        steps_per_call: with array data, this many steps run fused in one compiled
            ``lax.scan`` (batches gathered on the device, one host round trip per call);
            ``until_loss``, divergence, evaluation and checkpoints still act at the exact step.
            1 runs one jitted step per call.
        data_parallel: shard every batch along its samples across the local devices (weights
            replicated, gradient sums all-reduced by XLA). ``None`` (default): when more than
            one device is present and ``batch_size`` divides evenly; ``True`` insists (a
            ``ValueError`` if it cannot). Needs array data and ``steps_per_call > 1``. The
            number of devices used is stored in ``History.meta["devices"]``.

    Returns:
        ``(trained net, History)``.

    Raises:
        ValueError: unknown rule, bad data or batch size.
        DivergenceError: the loss, energy or gradient became NaN/inf; it names the step
            and carries the history and network up to the last finite step.
    """
    rule, solver = as_rule(rule, solver)
    _check_run_args("train", rule, steps, batch_size, steps_per_call)
    for name, value in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if value is not None:
            positive_int("train", name, value)
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if rule == "pc":
        solver = default_solver(net) if solver is None else solver
        solver.check(net)  # per-batch preparation (e.g. missing targets) happens in pc_step
    if eval_data is not None:
        net.check_data(*eval_data)

    opt_state = init_opt_state(net, optimizer)
    rec = Recorder(rule, meta)
    rec.meta.setdefault("rule", rule)
    rec.meta.setdefault("grad_scale", grad_scale)
    if rule == "pc":
        rec.meta.setdefault("solver", repr(solver))
    if checkpoint is not None and os.path.exists(checkpoint):
        net, opt_state, rec = Recorder.load(checkpoint, net, opt_state)
    start = step = rec.steps
    if eval_data is not None and start == 0:
        rec.evaluate(0, net, eval_data)

    def after_steps(step, net, opt_state):  # the cadence both loops share
        if eval_data is not None and eval_every and step % eval_every == 0:
            rec.evaluate(step, net, eval_data)
        if checkpoint is not None and step % checkpoint_every == 0:
            rec.save(checkpoint, net, opt_state)

    def divergence(step, info, net):
        return rec.diverged(diverged_message(rule, step, info, optimizer, solver, net.output_precision), step, net)

    bar = progress_bar(progress, steps, f"train {rule}")
    bar.update(start)
    names = tuple((metrics or {}).keys())
    fused = is_array_pair(data) and steps_per_call > 1
    sharding = batch_sharding(batch_size, data_parallel, fused)
    rec.meta["devices"] = 1 if sharding is None else len(sharding.mesh.devices.flat)
    sstate = _initial_solver_state(solver, rec.rows) if rule == "pc" else None
    try:
        if fused:
            x_all, y_all = device_data(net, data)
            if rule == "pc":
                solver = resolve_solver(net, y_all, solver)
            order = index_stream(x_all.shape[0], batch_size, key, start, steps)
            metric_fns = tuple((metrics or {}).values())
            scale, target = scalar(grad_scale), scalar(-np.inf if until_loss is None else until_loss)
            while step < steps:
                bounds = [steps - step, steps_per_call]
                if eval_data is not None and eval_every:
                    bounds.append(eval_every - step % eval_every)
                if checkpoint is not None:
                    bounds.append(checkpoint_every - step % checkpoint_every)
                n_valid = min(bounds)
                idx = [next(order) for _ in range(n_valid)]
                idx = np.stack(idx + [idx[0]] * (steps_per_call - n_valid))
                net, opt_state, info, extra, ran, bad, stop, sstate, _ = run_steps(
                    net, opt_state, x_all, y_all, jnp.asarray(idx), jnp.asarray(n_valid), scale, target,
                    rule, optimizer, solver, metric_fns, sharding, None, sstate,
                )
                info, extra, ran, bad = jax.device_get((info, extra, ran, bad))
                m = int(ran.sum())
                for i in range(m):
                    rec.add_from(info, extra, names, i)
                if bad.any():
                    raise divergence(step + m, host_row(info, int(np.argmax(bad))), net)
                step += m
                bar.update(m, loss=float(info.loss[m - 1]) if m else float("nan"))
                after_steps(step, net, opt_state)
                if bool(stop):
                    break
        else:
            step_fn = (
                (lambda n, s, x, y: bp_step(n, s, x, y, optimizer, grad_scale=grad_scale))
                if rule == "bp"
                else (lambda n, s, x, y: pc_step(n, s, x, y, optimizer, solver, grad_scale=grad_scale, solver_state=sstate,
                                                check=False))
            )
            batches = iter_batches(net, data, batch_size, key, start)
            while step < steps:
                x, y = next(batches)
                new_net, new_state, info = step_fn(net, opt_state, x, y)
                if not bool(jit_step_ok(rule, info, new_net)):
                    check_finite(x, y, f"the batch of step {step}")  # bad data is no divergence
                    raise divergence(step, info, net)
                rec.add(info, {name: fn(net, x, y) for name, fn in (metrics or {}).items()})
                net, opt_state = new_net, new_state
                if sstate is not None:
                    sstate = info.inference_dt
                step += 1
                loss = float(info.loss)
                bar.update(1, loss=loss)
                after_steps(step, net, opt_state)
                if until_loss is not None and loss < until_loss:
                    break
    finally:
        bar.close()
    if eval_data is not None and (not rec.evals or rec.evals[-1][0] != step):
        rec.evaluate(step, net, eval_data)
    if checkpoint is not None:
        rec.save(checkpoint, net, opt_state)
    history = rec.history()
    _warn_off_equilibrium("train", rule, solver, [history])
    return net, history


def _warn_off_equilibrium(owner: str, rule: str, solver: AbstractSolver | None, histories: list[History]) -> None:
    """Warn once when, under PC, a solver that iterates to ``tol`` (``solver.aims_at_tol``) ended
    some training steps' inference above it: those weight updates were not taken at an
    equilibrium. Members of a grid that diverged are left out (their divergence is reported already)."""
    if rule != "pc" or not solver.aims_at_tol:
        return
    kept = [np.asarray(h.inference_grad_norm, float) for h in histories if "diverged_at" not in h.meta]
    residuals = np.concatenate(kept) if kept else np.zeros(0)
    residuals = residuals[np.isfinite(residuals)]
    over = residuals > solver.tol
    if not over.any():
        return
    where = f" of the {len(kept)} members that did not diverge" if len(histories) > 1 else ""
    warnings.warn(
        f"{owner}: PC inference ended above {solver!r}'s tol = {solver.tol:g} at {int(over.sum())} of "
        f"{residuals.size} training steps{where} (largest residual {residuals.max():.3g}): those weight updates "
        f"were not taken at an equilibrium. Give the solver more iterations (max_steps, steps or t1), loosen tol (in float32 a wide net's "
        f"residual has a rounding floor near 1e-5: pcl.verify_equilibrium), or use a solver that converges "
        f"(pcl.Newton() for nonlinear nets, pcl.ExactLinear() for linear ones). history.inference_grad_norm "
        f"holds every step's residual.",
        RuntimeWarning,
        stacklevel=3,
    )


def _check_run_args(owner: str, rule, steps, batch_size, steps_per_call) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer (the maximum number of updates).")
    positive_int(owner, "batch_size", batch_size)
    positive_int(owner, "steps_per_call", steps_per_call)


def _initial_solver_state(solver, rows):
    """The solver state a run starts (or resumes) from: the last step's ``inference_dt`` when
    the solver carries one and a finite value was recorded, else ``solver.init_state()``."""
    state = type(solver).init_state(solver)
    if state is not None and rows:
        last = float(np.asarray(rows[-1].inference_dt))
        if math.isfinite(last):
            state = jnp.asarray(last, jnp.asarray(state).dtype)
    return state


def train_many(
    nets: PCNetwork,
    data: tuple[Array, Array],
    *,
    rule: PC | BP | str = "pc",
    optimizer: optax.GradientTransformation | None = None,
    solver: AbstractSolver | None = None,
    steps: int,
    until_loss: float | None = None,
    batch_size: int = 64,
    keys: PRNGKeyArray | None = None,
    grad_scale: float | Array = 1.0,
    progress: bool | None | Share = None,
    metrics: dict | None = None,
    steps_per_call: int = 32,
    vectorize: bool | None = None,
    on_divergence: str = "raise",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    diverge_above: float | None = None,
) -> tuple[PCNetwork, list[History]]:
    """Train several networks (seeds) as one compiled computation.

    ``nets`` is a network whose array leaves carry a leading seed axis ``S``, e.g.
    ``eqx.filter_vmap(lambda k: pcl.MLP(k, widths, "tanh"))(jax.random.split(key, S))``;
    ``keys`` (shape ``(S,)``, or None) are the per-seed shuffling keys. Seed ``s`` follows the
    trajectory of ``train(net_s, data, key=keys[s], ...)`` with the same arguments (same
    batches, same early stop at ``until_loss``), but every step of all seeds runs in one
    compiled call, which keeps an accelerator busy where one small network would not.

    Args: as :func:`train` (array data only; no evaluation or data parallelism), and
    ``checkpoint``: a file to save every member's state (networks, optimizer and solver
    states, histories, which members are done) to every ``checkpoint_every`` steps and at the
    end; if it exists, training resumes from it and the rerun equals the uninterrupted run
    (same batches, same updates; its grid of ``grad_scale`` must be the one saved).
    ``vectorize``: run the seeds as one vmapped computation (batched products) or one
    after the other inside the compiled call (``lax.map``). ``None`` (the default) vmaps on
    accelerators and maps on CPUs, where batched products were slower than a loop: 5 seeds of
    the paper's MNIST MLP took 7.5-7.7x one seed vmapped and 4.6-5.6x mapped on a 2-core CPU
    (``benchmarks/seeds.py``).

    ``grad_scale`` may be one value per seed (shape ``(S,)``): with ``optax.sgd(1.0)`` it is
    each member's learning rate, so a grid of learning rates x seeds trains as one program
    compiled once (a learning rate inside ``optax.sgd(lr)`` is a compile-time constant).
    ``on_divergence="stop"`` freezes a member whose loss, energy or gradient became NaN/inf
    at its last finite state and goes on with the others (its History then records the step
    in ``meta["diverged_at"]``); ``"raise"`` (default) raises :class:`DivergenceError`.
    ``diverge_above``: a member whose batch loss rises above ``diverge_above`` times the loss of
    its first step counts as diverged too (e.g. 100; ``fair`` applies that factor after its runs,
    to the median of the first 5 losses): in a grid of learning rates an unstable member's loss
    can grow for over a hundred steps without becoming NaN, and under PC each of those steps runs a solver at its iteration cap on a
    blown-up network (3 of the 8 members of ``mupc``'s 64-layer grid did this). A
    member that is done (diverged, or at ``until_loss``) costs nothing more when the seeds are
    mapped: its later steps are skipped, not computed and discarded (vmapped, every member
    computes every step).

    Returns:
        ``(trained nets, stacked like nets; [History per seed])``.

    Raises:
        ValueError: bad arguments (names the argument).
        DivergenceError: a seed's loss, energy or gradient became NaN/inf (names the seed and step).
    """
    rule, solver = as_rule(rule, solver)
    _check_run_args("train_many", rule, steps, batch_size, steps_per_call)
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence={on_divergence!r} is not known; use 'raise' or 'stop'.")
    if not is_array_pair(data):
        raise ValueError("train_many needs data as a pair of arrays (x, y).")
    leaves = [a for a in jax.tree_util.tree_leaves(nets) if eqx.is_array(a)]
    n_seeds = int(leaves[0].shape[0])
    if any(a.shape[:1] != (n_seeds,) for a in leaves):
        raise ValueError("nets must carry a leading seed axis on every array (build them with eqx.filter_vmap).")
    first = jax.tree_util.tree_map(lambda a: a[0] if eqx.is_array(a) else a, nets)
    x_all, y_all = device_data(first, data)
    if keys is not None and len(keys) != n_seeds:
        raise ValueError(f"keys has {len(keys)} entries but nets has {n_seeds} seeds.")
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if rule == "pc":
        solver = resolve_solver(first, y_all, solver)
    vectorize = jax.default_backend() != "cpu" if vectorize is None else bool(vectorize)
    opt_states = eqx.filter_vmap(lambda n: init_opt_state(n, optimizer))(nets)
    names = tuple((metrics or {}).keys())
    metric_fns = tuple((metrics or {}).values())
    scales = np.asarray(grad_scale, np.float64)
    if scales.ndim > 1 or (scales.ndim == 1 and scales.shape != (n_seeds,)):
        raise ValueError(f"grad_scale must be a number or one per seed (shape ({n_seeds},)), got shape {scales.shape}.")
    if not np.all(np.isfinite(scales)):
        raise ValueError(f"grad_scale={grad_scale!r} must be finite.")
    scale = jnp.asarray(np.broadcast_to(scales, (n_seeds,)), jnp.result_type(float))
    target = scalar(-np.inf if until_loss is None else until_loss)
    meta = {"rule": rule, "seeds": n_seeds}
    if rule == "pc":
        meta["solver"] = repr(solver)
    if diverge_above is not None:
        positive_number("train_many", "diverge_above", diverge_above)
        meta["diverge_above"] = float(diverge_above)
    recs = [Recorder(rule, dict(meta, seed_index=s, grad_scale=float(np.broadcast_to(scales, (n_seeds,))[s])))
            for s in range(n_seeds)]
    done = np.zeros(n_seeds, bool)
    state0 = type(solver).init_state(solver) if rule == "pc" else None
    sstates = None if state0 is None else jnp.broadcast_to(state0, (n_seeds,) + jnp.shape(state0))
    step, saved = 0, None  # saved: the step of the checkpoint on disk
    if checkpoint is not None:
        positive_int("train_many", "checkpoint_every", checkpoint_every)
        if os.path.exists(checkpoint):
            nets, opt_states, sstates, recs, done, step = _load_many(checkpoint, nets, opt_states, sstates, recs)
            saved = step
    orders = [index_stream(x_all.shape[0], batch_size, None if keys is None else keys[s], step, steps) for s in range(n_seeds)]
    # each member's loss ceiling (diverge_above x its first loss; NaN until its first step), from
    # the histories when resuming
    ceilings = None if diverge_above is None else jnp.asarray(
        [diverge_above * r.rows[0].loss if r.steps else np.nan for r in recs], jnp.result_type(float))
    bar = progress_bar(progress, steps, f"train {rule} x{n_seeds}")
    bar.update(step)
    try:
        while step < steps and not done.all():
            n_valid = min(steps - step, steps_per_call)
            if checkpoint is not None:
                n_valid = min(n_valid, checkpoint_every - step % checkpoint_every)
            idx = np.stack([np.stack([next(o) for _ in range(n_valid)] + [np.zeros(batch_size, np.int64)] * (steps_per_call - n_valid))
                            for o in orders])
            new_nets, opt_states, info, extra, ran, bad, stop, sstates, ceil = run_steps_many(
                nets, opt_states, x_all, y_all, jnp.asarray(idx), jnp.asarray(n_valid), scale, target,
                rule, optimizer, solver, metric_fns, jnp.asarray(done), vectorize, sstates, diverge_above, ceilings,
            )
            ceilings = None if diverge_above is None else ceil
            info, extra, ran, bad, stop = jax.device_get((info, extra, ran, bad, stop))
            for s in range(n_seeds):
                for i in np.nonzero(ran[s])[0]:
                    recs[s].add_from(info, extra, names, (s, i))
            if bad.any() and on_divergence == "stop":
                for s in np.nonzero(bad.any(1))[0]:
                    recs[s].meta["diverged_at"] = recs[s].steps
            elif bad.any():
                s, i = (int(v[0]) for v in np.nonzero(bad))
                row = host_row(info, (s, i))
                message = diverged_message(rule, recs[s].steps, row, optimizer, solver, first.output_precision)
                if ceilings is not None and float(row.loss) > float(ceilings[s]):  # finite, but above the ceiling
                    message = (f"Training ({rule.upper()}) stopped at step {recs[s].steps}: the loss rose to "
                               f"{float(row.loss):.4g}, above diverge_above={diverge_above:g} times its first step's "
                               f"({float(ceilings[s]) / diverge_above:.4g}). Likely cause: the learning rate is too large: "
                               "lower it. The error carries .history and .net up to the last good step.")
                net_s = jax.tree_util.tree_map(lambda a: a[s] if eqx.is_array(a) else a, new_nets)  # bad steps not applied
                raise recs[s].diverged(f"seed {s}: " + message, recs[s].steps, net_s)
            nets = new_nets
            done = np.asarray(stop, bool)
            step += n_valid
            # the members' median loss (a diverged member's last loss would swamp a mean)
            last = [r.rows[-1].loss for r in recs if r.steps and "diverged_at" not in r.meta]
            n_div = sum("diverged_at" in r.meta for r in recs)
            bar.update(n_valid, loss=float(np.median(last)) if last else float("nan"),
                       **({"diverged": n_div} if n_div else {}))
            if checkpoint is not None and step % checkpoint_every == 0:
                _save_many(checkpoint, nets, opt_states, sstates, recs, done, step)
                saved = step
    finally:
        bar.close()
    if checkpoint is not None and saved != step:  # the end, unless just written (a grid's file: hundreds of MB)
        _save_many(checkpoint, nets, opt_states, sstates, recs, done, step)
    hists = [r.history() for r in recs]
    _warn_off_equilibrium("train_many", rule, solver, hists)
    return nets, hists


def _save_many(path, nets, opt_states, sstates, recs, done, step) -> None:
    """A checkpoint of :func:`train_many` after ``step`` steps (see :func:`_load_many`)."""
    header = {"step": int(step), "done": [bool(d) for d in done], "members": [r.state() for r in recs]}
    write_checkpoint(path, header, (nets, opt_states, sstates))


def _load_many(path, nets, opt_states, sstates, recs):
    """``(nets, opt_states, solver states, recorders, done, step)`` from a checkpoint of
    :func:`_save_many`; the current ``recs`` (one per member, before any step) must agree with
    the saved ones on the rule and each member's ``grad_scale``, or the resumed run would not
    be the one that was interrupted."""
    header, (nets, opt_states, sstates) = read_checkpoint(path, (nets, opt_states, sstates), ("step", "done", "members"),
                                                          "a checkpoint of pcl.train_many")
    saved = [Recorder.from_state(m, f"checkpoint {path}") for m in header["members"]]
    if len(saved) != len(recs):
        raise ValueError(f"checkpoint {path} holds {len(saved)} members but this run has {len(recs)}; "
                         "delete it or pass another checkpoint path.")
    for s, (old, new) in enumerate(zip(saved, recs)):
        for k in ("rule", "grad_scale", "diverge_above"):
            if old.meta.get(k) != new.meta.get(k):
                raise ValueError(f"checkpoint {path} was written by another run (member {s}: {k} "
                                 f"{old.meta.get(k)!r}, this run {new.meta.get(k)!r}); delete it or pass another checkpoint path.")
    return nets, opt_states, sstates, saved, np.asarray(header["done"], bool), int(header["step"])

