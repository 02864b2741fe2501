"""The paper protocol beside the paper's own PyTorch code, run side by side.

``protocol="paper"`` claims to be the training code of the paper's notebooks. The test suite
checks that against a NumPy transcription (``tests/test_paper_protocol.py``); this script checks
it against the notebooks themselves. It executes, unchanged, the cells "Config", "Utils",
"Archs" and "Models" of ``PC_vs_BP_Convergence_Experiments_on_DNNs.ipynb`` and "Config",
"Utils" and "Models" of ``Matrix_Completion_Experiment.ipynb`` (classes ``PCN`` and ``BPN``,
``get_fc_network``, ``init_weights``, ``set_seed``; PyTorch in float64 through
``torch.set_default_dtype``), builds their networks with their own initialisation from
``torch.manual_seed``, and runs the bodies of their training loops (``train_pc``: one
``infer_train`` before training, then ``infer_train`` and ``optim.SGD.step`` per batch;
``train_bp``: ``MSELoss``, ``backward``, ``step``, ``zero_grad``). Beside each, ``pcl.train``
runs under ``experiments.base.protocol_setup("paper", ...)`` -- what the experiments run --
from the same weights on the same batches. Printed per case: the largest difference of the two
runs' weight changes relative to the largest change, whether PC's inference step size (``PCN.dt``) agrees after
every training step, and the largest loss difference.

PyTorch is not a dependency of pclandscape; this needs it and a copy of the notebooks'
repository (github.com/francesco-innocenti/pc-saddles):

    pip install torch                       # any CPU build
    python reference/notebook_check.py PATH/TO/pc-saddles

The exit status is 1 when a case differs by more than 1e-9 (relative) or in a step size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np

DNN = "PC_vs_BP_Convergence_Experiments_on_DNNs.ipynb"
MC = "Matrix_Completion_Experiment.ipynb"
TOL = 1e-9


def _cells(path: Path, titles: tuple[str, ...]) -> dict[str, str]:
    """The source of the code cells whose first line is ``#@title TITLE``, by title."""
    nb = json.loads(path.read_text())
    found = {}
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
        first = src.lstrip().splitlines()[0] if src.strip() else ""
        for t in titles:
            if first.strip() == f"#@title {t}":
                found[t] = src
    missing = [t for t in titles if t not in found]
    if missing:
        raise SystemExit(f"{path}: no code cell titled {', '.join(missing)}; is this the paper's notebook?")
    return found


def _notebook(path: Path, titles: tuple[str, ...], **overrides):
    """A namespace in which the notebook's cells ``titles`` ran, with ``overrides`` set after its
    Config cell (sizes shrunk for a CPU)."""
    import torch
    import torch.nn as nn
    import torch.optim as optim

    ns = {"os": os, "random": random, "np": np, "torch": torch, "nn": nn, "optim": optim, "__name__": "notebook"}
    cells = _cells(path, titles)
    for t in titles:
        exec(compile(cells[t], f"{path.name}:{t}", "exec"), ns)  # noqa: S102 - the user's copy of the paper's code
        if t == "Config":
            ns.update(overrides)
    return ns


def _weights(network) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in network.parameters()]


def _compare(name: str, w0, nb_ws, pkg_ws, nb_dts=None, pkg_dts=None, nb_losses=None, pkg_losses=None) -> bool:
    """Print and judge one case: the difference of the two runs' weight *changes* W - W0 relative
    to the largest change (sensitive even where training barely moves the weights), step sizes
    and losses."""
    moved = max(float(np.max(np.abs(b - a))) for a, b in zip(w0, nb_ws))
    dw = max(float(np.max(np.abs(np.asarray(p) - b))) for p, b in zip(pkg_ws, nb_ws)) / moved
    ok = dw <= TOL
    parts = [f"max |dW_pkg - dW_nb| / max |dW_nb| = {dw:.1e} (max |dW_nb| {moved:.1e})"]
    if nb_dts is not None:
        same = list(nb_dts) == [float(d) for d in pkg_dts]
        ok &= same
        parts.append(f"dt after each step {'identical' if same else 'DIFFERENT'} (min {min(nb_dts):g})")
    if nb_losses is not None:
        dl = float(np.max(np.abs(np.asarray(pkg_losses) - np.asarray(nb_losses))))
        ok &= dl <= TOL * max(1.0, float(np.max(np.abs(nb_losses))))
        parts.append(f"loss: max diff {dl:.1e}")
    print(f"  {'ok  ' if ok else 'DIFF'} {name}: " + "; ".join(parts), flush=True)
    return ok


def dnn_cases(repo: Path, steps: int, batch: int) -> bool:
    """The fc networks of the DNN notebook (``get_fc_network``), linear / tanh / ReLU, at its
    init std 5e-3 and at 0.25 (where dynamics are not nearly linear), DT = 0.1 and 0.7 (where
    the step-size control halves, carries and resets dt)."""
    import jax.numpy as jnp
    import optax
    import torch

    import pclandscape as pcl
    from pclandscape._compat import enable_x64
    from pclandscape.experiments.base import protocol_setup
    from pclandscape.experiments.fig5 import solver_after_inference

    d_in, d_out, n_hidden, width, lr, n_iters = 20, 5, 3, 16, 0.01, 50
    ok = True
    print(f"{DNN}: get_fc_network(n_hidden={n_hidden}, width={width}) on {d_in} -> {d_out} (the notebook: 4 x 500 on "
          f"784 -> 10), SGD lr {lr}, batches of {batch}, {steps} training steps, N_ITERS = {n_iters}")
    for act in ("linear", "tanh", "relu"):
        for scale, dt in ((5e-3, 0.1), (0.25, 0.1), (0.25, 0.7)):
            ns = _notebook(repo / DNN, ("Config", "Utils", "Archs", "Models"), FC_INPUT_DIM=d_in, FC_OUTPUT_DIM=d_out)
            gen = torch.Generator().manual_seed(100)
            batches = [(torch.randn(batch, d_in, generator=gen), torch.randn(batch, d_out, generator=gen)) for _ in range(steps + 1)]
            # train_pc: set_seed, get_network, PCN, init_weights per layer, get_optimiser
            ns["set_seed"](0)
            network = ns["get_network"]("fc", "MNIST", act, n_hidden=n_hidden, width=width)
            model = ns["PCN"](network=network, dt=dt)
            for layer in model.network:
                layer.apply(lambda m: ns["init_weights"](m, scale))
            w0 = _weights(network)
            optimizer = ns["get_optimiser"](id="SGD", model=model, lr=lr)
            loss_fn = torch.nn.MSELoss()
            x0, y0 = batches[0]
            model.infer_train(obs=y0, prior=x0, n_iters=n_iters, record_grad_norms=True)  # before training
            nb_dts, nb_losses = [], []
            for x, y in batches[1:]:
                nb_losses.append(loss_fn(model.forward(x), y).item())
                model.infer_train(obs=y, prior=x, n_iters=n_iters)
                optimizer.step()
                nb_dts.append(model.dt)
            # BP: train_bp's loop on the same batches, from the same initial weights
            ns["set_seed"](0)
            bp_network = ns["get_network"]("fc", "MNIST", act, n_hidden=n_hidden, width=width)
            bp_model = ns["BPN"](network=bp_network)
            for layer in bp_model.network:
                layer.apply(lambda m: ns["init_weights"](m, scale))
            bp_opt = ns["get_optimiser"](id="SGD", model=bp_model, lr=lr)
            bp_losses = []
            for x, y in batches[1:]:
                loss = loss_fn(bp_model(x), y)
                bp_losses.append(loss.item())
                loss.backward()
                bp_opt.step()
                bp_model.zero_grad()

            with enable_x64(True):
                net = pcl.MLP.from_weights([jnp.asarray(w) for w in w0], act)
                pc_net, solver, bp_s, pc_s = protocol_setup("paper", net, batch, dt=dt, T=n_iters)
                xb0, yb0 = (jnp.asarray(t.numpy()) for t in batches[0])
                solver = solver_after_inference(pc_net, solver, xb0, yb0)  # fig5's inference before training
                data = [(jnp.asarray(x.numpy()), jnp.asarray(y.numpy())) for x, y in batches[1:]]
                pc_out, pc_hist = pcl.train(pc_net, data, rule="pc", solver=solver, optimizer=optax.sgd(lr), steps=steps,
                                            key=None, grad_scale=pc_s, progress=False)
                bp_out, bp_hist = pcl.train(net, data, rule="bp", optimizer=optax.sgd(lr), steps=steps, key=None,
                                            grad_scale=bp_s, progress=False)
            # pcl's loss is Eq 1 (1/2 of the squared error, mean over samples) = d_y / 2 x MSELoss
            tag = f"{act:6s} std {scale:g} DT {dt:g}"
            ok &= _compare(f"PC {tag}", w0, _weights(network), pcl.weights(pc_out), nb_dts, np.asarray(pc_hist.inference_dt),
                           nb_losses, np.asarray(pc_hist.loss) * 2 / d_out)
            ok &= _compare(f"BP {tag}", w0, _weights(bp_network), pcl.weights(bp_out), None, None,
                           bp_losses, np.asarray(bp_hist.loss) * 2 / d_out)
    return ok


def matrix_completion_cases(repo: Path, steps: int) -> bool:
    """The matrix-completion notebook: its data (``A @ B``, the mask) from its own torch RNG
    stream after ``set_seed(SEED)`` and the network's init, width 100 as there; BP minimises
    ``MSELoss(output * mask, target * mask)`` on the masked matrix, PC clamps the output to the
    full target."""
    import jax.numpy as jnp
    import optax
    import torch

    import pclandscape as pcl
    from pclandscape._compat import enable_x64
    from pclandscape.experiments.base import protocol_setup

    ok = True
    print(f"{MC}: get_fc_network(N_HIDDEN=3, WIDTH=100) as in the notebook, LR 1e-2, {steps} training steps")
    for act in ("linear", "tanh", "relu"):
        runs = {}
        for rule in ("pc", "bp"):
            ns = _notebook(repo / MC, ("Config", "Utils", "Models"))
            ns["set_seed"](ns["SEED"])
            network = ns["get_fc_network"](n_hidden=ns["N_HIDDEN"], width=ns["WIDTH"], act_fn=act)
            model = ns["PCN"](network=network, dt=ns["DT"]) if rule == "pc" else ns["BPN"](network)
            (model.network if rule == "pc" else model).apply(lambda m: ns["init_weights"](m, ns["INIT_SCALE"]))
            w0 = _weights(network)
            optimizer = torch.optim.SGD(params=model.parameters(), lr=ns["LR"])
            a, b = torch.randn(size=(10, 3)), torch.randn(size=(3, 10))
            target = a @ b
            mask = (torch.rand(10, 10) > 0.2).float()
            masked = target * mask
            mse, losses, dts = torch.nn.MSELoss(), [], []
            for _ in range(steps):
                if rule == "pc":
                    losses.append(mse(model.forward(masked) * mask, target * mask).item())
                    model.infer_train(obs=target, prior=masked, n_iters=ns["N_ITERS"])
                    optimizer.step()
                    dts.append(model.dt)
                else:
                    loss = mse(model(masked) * mask, target * mask)
                    losses.append(loss.item())
                    loss.backward()
                    optimizer.step()
                    model.zero_grad()
                    optimizer.zero_grad()
            runs[rule] = (w0, _weights(network), losses, dts, target.numpy(), mask.numpy())
        w0, _, _, _, target, mask = runs["pc"]
        assert all(np.array_equal(u, v) for u, v in zip(w0, runs["bp"][0])), "the two runs start from different weights"
        with enable_x64(True):
            net = pcl.MLP.from_weights([jnp.asarray(w) for w in w0], act)
            pc_net, solver, bp_s, pc_s = protocol_setup("paper", net, 10, dt=ns["DT"], T=ns["N_ITERS"])
            x = jnp.asarray(target * mask)
            pc_out, pc_hist = pcl.train(pc_net, (x, jnp.asarray(target)), rule="pc", solver=solver,
                                        optimizer=optax.sgd(ns["LR"]), steps=steps, batch_size=10, key=None,
                                        grad_scale=pc_s, progress=False)
            y_obs = jnp.asarray(np.where(mask > 0, target, np.nan))  # BP sees the observed entries
            bp_out, bp_hist = pcl.train(net, (x, y_obs), rule="bp", optimizer=optax.sgd(ns["LR"]), steps=steps,
                                        batch_size=10, key=None, grad_scale=bp_s, progress=False)
        ok &= _compare(f"PC {act}", w0, runs["pc"][1], pcl.weights(pc_out), runs["pc"][3], np.asarray(pc_hist.inference_dt))
        # MSELoss(output * mask, target * mask) = (sum over observed of squared error) / 100 = Eq 1 over the
        # observed entries x 2 / d_y (pcl's masked loss: 1/2 the squared error over observed, mean over rows)
        ok &= _compare(f"BP {act}", w0, runs["bp"][1], pcl.weights(bp_out), None, None, runs["bp"][2],
                       np.asarray(bp_hist.loss) * 2 / 10)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repo", type=Path, help="a copy of github.com/francesco-innocenti/pc-saddles (the notebooks)")
    p.add_argument("--steps", type=int, default=20, help="training steps per case (default 20)")
    p.add_argument("--batch", type=int, default=8, help="batch size of the DNN cases (default 8)")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("notebook_check: PyTorch is needed to run the notebooks' code: pip install torch", file=sys.stderr)
        return 2
    for nb in (DNN, MC):
        if not (args.repo / nb).is_file():
            print(f"notebook_check: {args.repo / nb} not found; pass the folder of the notebooks' repository", file=sys.stderr)
            return 2
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, float64; pass when the weight changes agree to {TOL:g} (relative) and every dt is identical")
    ok = dnn_cases(args.repo, args.steps, args.batch)
    ok &= matrix_completion_cases(args.repo, args.steps)
    print("all cases agree" if ok else "SOME CASES DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
