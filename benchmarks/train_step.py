"""ms per training step, BP vs PC, on the paper's MNIST MLP (784-500-500-500-500-10, batch 64).

Rows: BP (`pcl.bp_step`), PC with Euler T=50 dt=0.1 (`pcl.pc_step`; activity gradients by
autodiff or layer-stacked, the loop rolled or unrolled; the backend's default is marked), PC with ExactLinear (linear net only), PC per step inside `pcl.train`'s fused
loop (`steps_per_call` steps per call), and the *floor*: a plain hand-written PC step
(activities in one `lax.fori_loop`, one jit, no diagnostics) measured in the same run.
Float32, median of `--repeats` steps after compilation, timed round-robin. Prints a table
with the PC/BP and PC/floor ratios.

Peers: if ``jpc`` imports, its Euler PC step (``jpc.make_pc_step``, same T and dt) is timed
in the same run; if ``pcx`` imports, its tutorial training step on the same weights (checked
to give the same update as ``pcl.pc_step``).

Every row also shows its FLOP rate (GFLOP/s, matrix products only, counted as in
``scaling.py``) and the header the rate of a 2048 x 2048 float32 matmul (the machine's
practical peak) measured in the same run.

With ``--variants`` it adds hand-written probes, one per hypothesis of where the time goes:
the floor with its loop unrolled (loop overhead; pcx unrolls); a *grouped* floor that stacks
the equal-shape hidden weight matrices and computes the activity gradients by hand, so each
Euler step is a few batched matrix products instead of one product per layer (per-product
overhead); the floor compiled with XLA:CPU's concurrency-optimised scheduler (independent
kernels run side by side: what pcx's unrolled program gets from XLA 0.4.x's thunk runtime);
and *products only*: the step's own matrix products (T x 2 (L - 2) products of the same
shapes, in the same dependency pattern, with nothing else), the best rate this step's product
shapes can reach on the machine. The number of device kernels (fusions, library calls) in
each compiled probe is printed below the table. The XLA flags in
force (``XLA_FLAGS``) are printed in the header: run the script once per flag set to compare
e.g. command buffers (CUDA graphs) on and off.

    python benchmarks/train_step.py [--repeats 30] [--batch 64] [--width 500] [--variants]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name, interleaved_median_ms, matmul_rate  # noqa: E402
from scaling import step_flops  # noqa: E402


_ACT = {"linear": (lambda a: a, lambda a: jnp.ones_like(a)), "tanh": (jnp.tanh, lambda a: 1 - jnp.tanh(a) ** 2)}


def floor_step(activation, dt, steps, lr, unroll=1, compiler_options=None):
    """A plain PC step written by hand: no validation, no diagnostics (``compiler_options``:
    XLA options for its compilation, e.g. a scheduler probe)."""
    act = _ACT[activation][0]

    def energy(ws, zs, x, y):
        full = [x, *zs, y]
        e = 0.0
        for l, w in enumerate(ws):
            h = full[l] if l == 0 else act(full[l])
            e = e + jnp.sum((full[l + 1] - h @ w.T) ** 2)
        return 0.5 * e

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def step(ws, x, y):
        zs, h = [], x
        for l, w in enumerate(ws[:-1]):
            h = (h if l == 0 else act(h)) @ w.T
            zs.append(h)
        gz = jax.grad(energy, argnums=1)

        def body(_, zs):
            g = gz(ws, zs, x, y)
            return [z - dt * gi for z, gi in zip(zs, g)]

        zs = jax.lax.fori_loop(0, steps, body, zs, unroll=unroll)
        gw = jax.grad(lambda ws: energy(ws, zs, x, y) / x.shape[0])(ws)
        return [w - lr * g for w, g in zip(ws, gw)]

    return step


def grouped_floor_step(activation, dt, steps, lr):
    """The floor with the equal-shape hidden layers W_2..W_{L-1} stacked: per Euler step one
    batched product for their predictions, one for their back-projected errors, one product
    each for the output layer, and hand-written activity gradients
    ``g_l = e_l - f'(z_l) * (e_{l+1} W_{l+1})``; the loop is unrolled."""
    act, dact = _ACT[activation]

    @jax.jit
    def step(ws, x, y):
        w1, wmid, wout = ws[0], jnp.stack(ws[1:-1]), ws[-1]
        mu1 = x @ w1.T  # constant during inference
        z = [mu1]
        for w in ws[1:-1]:
            z.append(act(z[-1]) @ w.T)
        z = jnp.stack(z)  # (H, N, w)

        def errors(z):
            e_mid = z[1:] - jnp.einsum("knj,kij->kni", act(z[:-1]), wmid)
            return z[0] - mu1, e_mid, y - act(z[-1]) @ wout.T

        def body(_, z):
            e1, e_mid, e_out = errors(z)
            e = jnp.concatenate([e1[None], e_mid])
            back = jnp.concatenate([jnp.einsum("kni,kij->knj", e_mid, wmid), (e_out @ wout)[None]])
            return z - dt * (e - dact(z) * back)

        z = jax.lax.fori_loop(0, steps, body, z, unroll=True)
        e1, e_mid, e_out = errors(z)
        n = x.shape[0]
        hz = act(z)
        g = [-(e1.T @ x)] + [-(e_mid[k].T @ hz[k]) for k in range(e_mid.shape[0])] + [-(e_out.T @ hz[-1])]
        return [w - lr * gi / n for w, gi in zip(ws, g)]

    return step


def peer_steps(activation, widths, x, y, steps, dt, lr, ws) -> dict:
    """Zero-argument callables for the same PC step in peer libraries that import here.

    jpc (``make_pc_step`` with diffrax Euler, ``dt``, ``steps * dt`` time, constant steps): the
    same number of activity steps and one SGD update. Note that jpc differentiates the
    batch-*mean* energy, so its activities move ``dt / N`` per step (see docs/conventions.md): the rows
    compare cost per step, not equal dynamics.

    pcx (its tutorials' training step: value nodes (``Vode``) initialised by the forward pass,
    ``steps`` SGD steps of size ``dt`` on the batch-summed energy, one SGD step of the weights on
    the batch-mean energy, in one ``pcx.functional.jit``): per-sample steps as here, so with the
    weights ``ws`` copied in it computes the same update as ``pcl.pc_step`` (checked, printed)."""
    out = {}
    try:
        import diffrax
        import jpc
    except ImportError:
        pass
    else:
        model = jpc.make_mlp(jax.random.key(0), input_dim=widths[0], width=widths[1], depth=len(widths) - 1,
                             output_dim=widths[-1], act_fn="linear" if activation == "linear" else activation)
        optim = optax.sgd(lr)
        opt_state = optim.init((eqx.filter(model, eqx.is_array), None))
        kw = dict(input=x, ode_solver=diffrax.Euler(), max_t1=steps * dt, dt=dt, stepsize_controller=diffrax.ConstantStepSize())
        out[f"jpc {getattr(jpc, '__version__', '')} Euler T={steps} (make_pc_step)"] = (
            lambda: jpc.make_pc_step(model, optim, opt_state, y, **kw)["model"])
    try:
        import pcx  # noqa: F401
    except ImportError:
        return out
    step, weights_after = _pcx_step(activation, ws, x, y, steps, dt, lr)
    net = pcl.MLP.from_weights(ws, activation)
    ours = pcl.pc_step(net, pcl.init_opt_state(net, optax.sgd(lr)), x, y, optax.sgd(lr), pcl.Euler(dt=dt, steps=steps))[0]
    step()
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(weights_after(), ours.weights))
    print(f"# pcx step vs pcl.pc_step from the same weights: max |W_pcx - W_pcl| = {diff:.1e}", flush=True)
    out["pcx Euler T={} (tutorial step)".format(steps)] = step
    return out


def _pcx_step(activation, ws, x, y, steps, dt, lr):
    """pcx's tutorial PC training step for the MLP with weights ``ws``; returns ``(step, weights)``.

    Every call of ``step`` re-initialises the activities by the forward pass and updates the
    weights once (so repeated calls keep changing them, like the other rows)."""
    import pcx as px
    import pcx.functional as pxf
    import pcx.nn as pxnn
    import pcx.predictive_coding as pxc
    import pcx.utils as pxu

    act = _ACT[activation][0]
    widths = [ws[0].shape[1]] + [w.shape[0] for w in ws]

    class Model(pxc.EnergyModule):
        def __init__(self):
            super().__init__()
            self.act = px.static(act)
            self.layers = [pxnn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
            self.vodes = [pxc.Vode() for _ in self.layers]

        def __call__(self, xb, yb=None):
            h = xb
            for i, (layer, vode) in enumerate(zip(self.layers, self.vodes)):
                h = vode(layer(h if i == 0 else self.act.get()(h)))
            if yb is not None:
                self.vodes[-1].set("h", yb)
            return self.vodes[-1].get("u")

    model = Model()
    for layer, w in zip(model.layers, ws):
        layer.nn.weight.set(w)
    batched = pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0))

    @pxf.vmap(batched, in_axes=(0, 0), out_axes=0)
    def forward(xb, yb, *, model):
        return model(xb, yb)

    @pxf.vmap(batched, in_axes=(0,), out_axes=(None, 0), axis_name="batch")
    def energy(xb, *, model):
        out = model(xb, None)
        return jax.lax.psum(model.energy(), "batch"), out

    @pxf.jit()
    def train_on_batch(xb, yb, *, model, optim_w, optim_h):
        # the hidden value nodes (the clamped output is not inferred); parameters are matched
        # by identity, so the mask must see the model inside the transformation
        hidden = pxu.M(lambda p: isinstance(p, pxc.VodeParam) and p is not model.vodes[-1].h)
        model.train()
        with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
            forward(xb, yb, model=model)
        optim_h.init(hidden(model))
        for _ in range(steps):
            with pxu.step(model, clear_params=pxc.VodeParam.Cache):
                _, g = pxf.value_and_grad(hidden.to([False, True]), has_aux=True)(energy)(xb, model=model)
            optim_h.step(model, g["model"])
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            _, g = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(energy)(xb, model=model)
        optim_w.step(model, g["model"], scale_by=1.0 / xb.shape[0])

    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(x, y, model=model)  # fixes the batch shape of the value nodes
    optim_h = pxu.Optim(lambda: optax.sgd(dt))
    optim_w = pxu.Optim(lambda: optax.sgd(lr), pxu.M(pxnn.LayerParam)(model))

    def step():
        train_on_batch(x, y, model=model, optim_w=optim_w, optim_h=optim_h)
        return model.layers[-1].nn.weight.get()

    return step, lambda: [layer.nn.weight.get() for layer in model.layers]


def products_only(ws, x, steps):
    """``(fn, flops)``: the step's matrix products and nothing else: per Euler step, the
    predictions ``z_{l-1} W_l^T`` and back-projections ``e_l W_l`` of layers 2..L, each
    back-projection fed by its own prediction as in the real step (so the dependency depth is
    the same), in one ``fori_loop``. Its rate bounds what any PC step of these shapes can reach."""
    n = x.shape[0]
    hs0 = [jnp.ones((n, w.shape[1]), x.dtype) for w in ws[1:]]

    @jax.jit
    def run(ws, hs):
        def body(_, hs):
            return [0.5 * (h + (h @ w.T) @ w) for h, w in zip(hs, ws[1:])]

        return jax.lax.fori_loop(0, steps, body, hs)

    flops = 2.0 * n * steps * 2 * sum(w.size for w in ws[1:])
    return (lambda: run(ws, hs0)), flops


def kernel_count(jitted, *args) -> int:
    """Device kernels in the compiled program: fusions, library calls and other top-level ops
    that launch work (a rough count; loop bodies counted once per unrolled copy)."""
    text = jitted.lower(*args).compile().as_text()
    return len(re.findall(r"= [^ ]+ (?:fusion|custom-call|dot|convolution|cublas[^ (]*)\(", text))


def train_ms_per_step(net, x, y, opt, solver, steps):
    """ms per step of ``pcl.train`` with all ``steps`` fused in one call (median of 3 calls)."""
    import statistics

    data = (jnp.tile(x, (4, 1)), jnp.tile(y, (4, 1)))
    run = lambda: pcl.train(net, data, rule="pc", optimizer=opt, solver=solver, steps=steps,  # noqa: E731
                            batch_size=x.shape[0], steps_per_call=steps, progress=False, key=jax.random.key(0))[0]
    jax.block_until_ready(run())
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(run())
        times.append(1e3 * (time.perf_counter() - t) / steps)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--steps", type=int, default=50, help="Euler inference steps T")
    p.add_argument("--activations", nargs="+", default=["linear", "tanh"])
    p.add_argument("--variants", action="store_true", help="add the unrolled and grouped hand-written probes")
    p.add_argument("--train-steps", type=int, default=0, help="also time pcl.train with this many steps fused per call")
    args = p.parse_args(argv)

    widths = [784] + [args.width] * 4 + [10]
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (args.batch, 784))
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (args.batch,), 0, 10), 10)
    opt = optax.sgd(1e-3)
    euler = pcl.Euler(dt=0.1, steps=args.steps)  # the default: loop form chosen by backend
    default = (bool(euler._unroll()), jax.default_backend() == "gpu")
    eulers = {}
    for stacked in (False, True):
        for unroll in (False, True):
            tag = " (default)" if (unroll, stacked) == default else ""
            name = f"PC Euler {'stacked' if stacked else 'autodiff'}, {'unrolled' if unroll else 'rolled'}{tag}"
            eulers[name] = pcl.Euler(dt=0.1, steps=args.steps, unroll=True if unroll else 1, stacked=stacked)
    peak = matmul_rate(args.repeats)
    pc_flops = step_flops(widths, args.batch, args.steps)
    print(f"device: {device_name()}  net: {widths}  batch {args.batch}  float32  median of {args.repeats}  "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  matmul precision {jax.config.jax_default_matmul_precision or 'default'}")
    print(f"2048x2048 matmul (practical peak): {peak:.1f} GFLOP/s;  one PC step (T={args.steps}): {pc_flops / 1e9:.2f} GFLOP "
          "of matrix products")
    print(f"{'activation':<10} {'method':<44} {'ms/step':>9} {'/BP':>7} {'/floor':>7} {'GFLOP/s':>8} {'of peak':>8}")
    for activation in args.activations:
        net = pcl.MLP(key, widths, activation, init_std=5e-3**0.5)
        state = pcl.init_opt_state(net, opt)
        ws = pcl.weights(net)
        floor = floor_step(activation, 0.1, args.steps, 1e-3)
        fl_name = f"floor: hand-written PC T={args.steps}"
        fns = {
            "BP (bp_step)": lambda: pcl.bp_step(net, state, x, y, opt),
            **{name: (lambda e=e: pcl.pc_step(net, state, x, y, opt, e)) for name, e in eulers.items()},
            fl_name: lambda: floor(ws, x, y),
        }
        fns.update(peer_steps(activation, widths, x, y, args.steps, 0.1, 1e-3, ws))
        probes, flops = {}, {}
        if args.variants:
            probes = {
                "floor, loop unrolled": floor_step(activation, 0.1, args.steps, 1e-3, unroll=True),
                "floor, grouped + unrolled": grouped_floor_step(activation, 0.1, args.steps, 1e-3),
            }
            if jax.default_backend() == "cpu":
                probes["floor, concurrency-optimised scheduler"] = floor_step(
                    activation, 0.1, args.steps, 1e-3, compiler_options={"xla_cpu_enable_concurrency_optimized_scheduler": True})
            for name, f in probes.items():
                fns[name] = lambda f=f: f(ws, x, y)
            prod_name = "products only (the step's shapes' limit)"
            fns[prod_name], flops[prod_name] = products_only(ws, x, args.steps)
        res = interleaved_median_ms(fns, repeats=args.repeats)
        if activation == "linear":
            # Timed on its own: LAPACK's worker threads keep spinning after a Cholesky and
            # slow down whatever runs next on a small machine, which would skew a round-robin.
            res["PC ExactLinear (pc_step)"] = interleaved_median_ms(
                {"x": lambda: pcl.pc_step(net, state, x, y, opt, pcl.ExactLinear())}, repeats=args.repeats
            )["x"]
        if args.train_steps:
            res[f"PC Euler in pcl.train ({args.train_steps} fused)"] = train_ms_per_step(net, x, y, opt, euler, args.train_steps)
        bp = res["BP (bp_step)"]
        fl = res[fl_name]
        for name, ms in res.items():
            rate = "" if name.startswith(("BP", "PC ExactLinear")) else flops.get(name, pc_flops) / (ms * 1e-3) / 1e9
            tail = f" {rate:>8.1f} {rate / peak:>7.0%}" if rate else ""
            print(f"{activation:<10} {name:<44} {ms:>9.2f} {ms / bp:>7.1f} {ms / fl:>7.2f}{tail}", flush=True)
        if probes:
            counts = {fl_name: kernel_count(floor, ws, x, y)} | {k: kernel_count(f, ws, x, y) for k, f in probes.items()}
            print(f"{activation:<10} kernels in the compiled program: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
