"""Where the PC step leaves the latency-bound regime: time and FLOP rate of the default
``pcl.pc_step`` against width and batch, beside a plain large matmul's rate.

The net is the paper's MNIST MLP shape ``784 - w x 4 - 10`` (tanh), Euler T = 50, dt = 0.1,
float32, ``optax.sgd``. FLOPs counted per step (2 per multiply-add): each Euler step computes
the predictions of layers 2..L and the back-projections ``W_l^T e_l`` of layers 2..L (the
first layer's ``W_1 x`` is loop-invariant), plus one feedforward pass and the weight
gradient (``e_l z_{l-1}^T`` for every layer); element-wise work is not counted. The
practical peak is the median rate of a 2048 x 2048 float32 matmul on the same machine in the
same run. Medians of --repeats after compilation, timed round-robin within each table.

    python benchmarks/scaling.py [--widths 128,256,512,1024,2048] [--batches 16,64,256,1024,4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name, interleaved_median_ms, matmul_rate  # noqa: E402


def step_flops(widths, batch: int, steps: int) -> float:
    """Multiply-add FLOPs (x2) of one PC training step, as counted in the module docstring."""
    macs = [a * b for a, b in zip(widths[:-1], widths[1:])]  # per sample, layer l: n_l x n_{l-1}
    inner = 2 * sum(macs[1:])  # predictions + back-projections of layers 2..L
    once = sum(macs) + sum(macs)  # feedforward + weight gradient
    return 2.0 * batch * (steps * inner + once)


def case(width: int, batch: int, steps: int):
    widths = [784, width, width, width, width, 10]
    net = pcl.MLP(jax.random.key(0), widths, "tanh")
    x = jax.random.normal(jax.random.key(1), (batch, 784))
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (batch,), 0, 10), 10)
    opt = optax.sgd(1e-3)
    state = pcl.init_opt_state(net, opt)
    solver = pcl.Euler(dt=0.1, steps=steps)
    fn = lambda: pcl.pc_step(net, state, x, y, opt, solver, check=False)[0]  # noqa: E731
    return fn, step_flops(widths, batch, steps)


def table(title, cases, repeats, peak):
    fns = {k: c[0] for k, c in cases.items()}
    ms = interleaved_median_ms(fns, repeats=repeats)
    print(f"\n{title}")
    print(f"{'':>8} {'ms/step':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}")
    for k, (_, flops) in cases.items():
        rate = flops / (ms[k] * 1e-3) / 1e9
        print(f"{k:>8} {ms[k]:>9.2f} {flops / 1e9:>11.3f} {rate:>8.1f} {rate / peak:>7.0%}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="128,256,512,1024,2048")
    p.add_argument("--batches", default="16,64,256,1024,4096")
    p.add_argument("--width-batch", type=int, default=64, help="batch of the width table")
    p.add_argument("--batch-width", type=int, default=500, help="width of the batch table")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    peak = matmul_rate(a.repeats)
    print(f"device: {device_name()}  float32  784-w x4-10 tanh, Euler T={a.steps}, pc_step  "
          f"2048x2048 matmul (practical peak): {peak:.1f} GFLOP/s")
    widths = [int(w) for w in a.widths.split(",")]
    table(f"width (batch {a.width_batch})", {str(w): case(w, a.width_batch, a.steps) for w in widths}, a.repeats, peak)
    batches = [int(b) for b in a.batches.split(",")]
    table(f"batch (width {a.batch_width})", {str(b): case(a.batch_width, b, a.steps) for b in batches}, a.repeats, peak)


if __name__ == "__main__":
    main()
