"""The ``pclandscape`` command."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__


class UsageError(Exception):
    """A user error reported as one line on stderr with exit code 2."""


def _cmd_demo(args) -> int:
    import jax
    import jax.numpy as jnp
    import optax

    import pclandscape as pcl

    key = jax.random.key(args.seed)
    kx, kw, kn = jax.random.split(key, 3)
    d = 4
    x = 1.0 + jnp.sqrt(0.1) * jax.random.normal(kx, (512, d))
    w_true = jax.random.normal(kw, (d, d)) / jnp.sqrt(d)
    y = x @ w_true.T
    net0 = pcl.MLP(kn, [d, 16, 16, d], "tanh", init_std=0.1)
    histories = {}
    for rule in ("bp", "pc"):
        solver = pcl.Euler(dt=0.1, steps=30) if rule == "pc" else None
        _, hist = pcl.train(
            net0,
            (x, y),
            rule=rule,
            optimizer=optax.sgd(0.05),
            solver=solver,
            steps=args.steps,
            batch_size=64,
            key=jax.random.key(args.seed + 1),
            progress=None,
        )
        histories[rule] = hist.loss
    print(f"toy regression y = W x, MLP {[d, 16, 16, d]} tanh, SGD lr 0.05, batch 64, PC: Euler dt=0.1 T=30")
    print(f"{'step':>6} {'BP loss':>12} {'PC loss':>12}")
    for s in list(range(0, args.steps, max(1, args.steps // 10))) + [args.steps - 1]:
        print(f"{s:>6} {histories['bp'][s]:>12.5f} {histories['pc'][s]:>12.5f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pclandscape",
        description="Train predictive coding networks and study their energy landscape.",
    )
    p.add_argument("--version", action="version", version=f"pclandscape {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="train a PC and a BP network on a toy regression task")
    d.add_argument("--steps", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UsageError as e:
        print(f"pclandscape: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pclandscape: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
