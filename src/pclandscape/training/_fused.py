"""Many training steps fused in one compiled ``lax.scan`` (one seed or a seed axis)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._steps import bp_update, pc_update, step_ok

__all__ = ["run_steps", "run_steps_many", "jit_step_ok"]


def _tree_select(keep, old, new):
    """``old`` where ``keep`` else ``new``, over the array leaves of two same-structure pytrees."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(keep, a, b) if eqx.is_array(a) else a, old, new, is_leaf=lambda v: v is None
    )


def _skipped(update, net, state, sstate, x, y):
    """What ``update`` returns, for a step that is not taken: the state unchanged, the
    diagnostics NaN (unused: the step is not recorded)."""
    _, _, info, _, extra = jax.eval_shape(update, net, state, sstate, x, y)
    nan = lambda s: jnp.full(s.shape, jnp.nan, s.dtype) if jnp.issubdtype(s.dtype, jnp.inexact) else jnp.zeros(s.shape, s.dtype)  # noqa: E731
    return net, state, jax.tree_util.tree_map(nan, info), sstate, jax.tree_util.tree_map(nan, extra)


def _scan_steps(net, opt_state, x_all, y_all, idx, n_valid, scale, target, rule, optimizer, solver, metric_fns,
                batch_sharding=None, done=None, solver_state=None, diverge_above=None, ceiling=None):
    """``len(idx)`` training steps fused in one ``lax.scan``; steps past ``n_valid``, after the
    loss target is met, or that would produce non-finite values leave the state unchanged.

    ``batch_sharding`` (a ``jax.sharding.Sharding`` or None) shards each gathered batch along
    its sample axis across devices: data parallelism, with the weight-gradient sums reduced
    across devices by XLA. ``done`` (a boolean, default False) marks a run already finished.
    ``solver_state`` is the inference solver's carried state (see ``AbstractSolver.init_state``).
    ``diverge_above`` (a float, static) with ``ceiling`` (a scalar; NaN: not yet known): a step
    whose loss exceeds the ceiling counts as diverged, as a non-finite one does; an unknown
    ceiling becomes ``diverge_above`` times the loss of the first step taken. Returns the
    ceiling last (NaN without ``diverge_above``)."""

    def update(net, state, sstate, x, y):
        if rule == "bp":
            new_net, new_state, info = bp_update(net, state, x, y, optimizer, scale)
            new_sstate = sstate
        else:
            new_net, new_state, info = pc_update(net, state, x, y, optimizer, solver, scale, sstate)
            new_sstate = None if sstate is None else info.inference_dt.astype(jnp.result_type(sstate))
        return new_net, new_state, info, new_sstate, tuple(fn(net, x, y) for fn in metric_fns)

    def body(carry, inputs):
        net, state, done, sstate, ceil = carry
        i, ids = inputs
        x, y = x_all[ids], y_all[ids]
        if batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, batch_sharding)
            y = jax.lax.with_sharding_constraint(y, batch_sharding)
        active = (~done) & (i < n_valid)
        # A finished run (diverged, target met) and the padding steps past n_valid skip the update: under
        # lax.map (one seed after the other) the cond skips the work, e.g. the Newton iterations of a
        # frozen member stuck at its last finite state; vmapped, it is a select, as before.
        new_net, new_state, info, new_sstate, extra = jax.lax.cond(
            active, update, lambda *a: _skipped(update, *a), net, state, sstate, x, y)
        finite = step_ok(rule, info, new_net)
        if diverge_above is not None:
            ceil = jnp.where(jnp.isnan(ceil) & active, diverge_above * info.loss, ceil)
            finite &= ~(info.loss > ceil)
        apply = active & finite
        net = _tree_select(~apply, net, new_net)
        state = _tree_select(~apply, state, new_state)
        sstate = _tree_select(~apply, sstate, new_sstate)
        done = done | (active & ~finite) | (apply & (info.loss < target))
        return (net, state, done, sstate, ceil), (info, extra, apply, active & ~finite)

    steps = jnp.arange(idx.shape[0])
    done = jnp.asarray(False) if done is None else done
    ceil0 = jnp.asarray(jnp.nan if ceiling is None else ceiling, jnp.result_type(float))
    (net, state, done, sstate, ceil), (info, extra, ran, bad) = jax.lax.scan(
        body, (net, opt_state, done, solver_state, ceil0), (steps, idx))
    return net, state, info, extra, ran, bad, done, sstate, ceil


run_steps = eqx.filter_jit(_scan_steps)
jit_step_ok = eqx.filter_jit(step_ok)


@eqx.filter_jit
def run_steps_many(nets, opt_states, x_all, y_all, idx, n_valid, scale, target, rule, optimizer, solver, metric_fns, done,
                    vectorize, solver_states=None, diverge_above=None, ceilings=None):
    """:func:`_scan_steps` over a leading seed axis of ``nets``, ``opt_states``, ``idx``,
    ``done``, ``scale``, ``solver_states`` and ``ceilings``: vmapped (``vectorize``) or one
    seed after the other (``lax.map``), in one program."""

    def one(net, state, ids, d, sc, ss, ceil):
        return _scan_steps(net, state, x_all, y_all, ids, n_valid, sc, target, rule, optimizer, solver, metric_fns, None, d,
                           ss, diverge_above, ceil)

    if vectorize:
        return eqx.filter_vmap(one)(nets, opt_states, idx, done, scale, solver_states, ceilings)
    return jax.lax.map(lambda a: one(*a), (nets, opt_states, idx, done, scale, solver_states, ceilings))

