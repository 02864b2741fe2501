"""Train the same MLP with backprop and with predictive coding, and compare the losses.

    python examples/train_pc_vs_bp.py                 # Fashion-MNIST if present, else MNIST-1D
    python examples/train_pc_vs_bp.py --steps 50 --width 32 --data toy

PC uses Eq 2 at a verified equilibrium (Newton inference, residual printed); both rules use
SGD at the same learning rate on the same 1/(2N) scale (the "fair" convention).
"""

from __future__ import annotations

import argparse

import jax
import optax

import pclandscape as pcl


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion_mnist", help="data set name (fallbacks: mnist1d)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args(argv)

    fallback = ("mnist1d",) if args.data != "toy" else ()
    kw = {"n_train": 512, "n_test": 128, "dim": 4} if args.data == "toy" else {}
    ds = pcl.data.load(args.data, fallback=fallback, download=False, **kw)
    print(f"data: {ds.name} ({ds.source}) {ds.note}".strip())
    net = pcl.MLP(jax.random.key(0), [ds.input_dim, args.width, args.width, ds.output_dim], "tanh")
    final = {}
    for rule, how in (("bp", pcl.BP()), ("pc", pcl.PC(solver=pcl.Newton(tol=1e-4)))):
        _, hist = pcl.train(net, (ds.x_train, ds.y_train), rule=how, optimizer=optax.sgd(args.lr),
                            steps=args.steps, batch_size=64, key=jax.random.key(1),
                            eval_data=(ds.x_test, ds.y_test), progress=None)
        final[rule] = float(hist.test_loss[-1])
        extra = f", worst inference residual {hist.inference_grad_norm.max():.1e}" if rule == "pc" else ""
        acc = hist.test_accuracy[-1]
        acc = "" if acc != acc else f", test accuracy {acc:.3f}"  # NaN for regression targets
        print(f"{rule}: train loss {hist.loss[0]:.4f} -> {hist.loss[-1]:.4f}, test loss {final[rule]:.4f}{acc}{extra}")
    return final


if __name__ == "__main__":
    main()
