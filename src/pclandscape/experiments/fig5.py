"""Figs 5 and 11: BP vs PC escaping the origin on MNIST / Fashion-MNIST MLPs and a CNN.

Linear, tanh and ReLU networks with 5 fully connected layers (width 500) and a CNN (3 conv +
max-pool blocks, 2 FC layers) start near the origin and train with SGD (lr 1e-3, batch 64); PC
uses T = 50 Euler inference steps (dt = 0.1). §A.4 says PC trained until its loss was below
1e-3 and BP for as many steps; the notebook's code (followed here, ``stop="epochs"``) trains PC
by whole epochs until the mean training MSE of an epoch falls by less than 1e-3 from the
previous epoch's (at most 35 epochs), after one inference on a shuffled batch before training
whose step size persists; ``stop="loss"`` follows the text. Fig 11 plots the weight-gradient norms. The runs use the paper's own training code
(base.PROTOCOL_NOTE: PC's step 320x BP's); the question it leaves open, with each rule at its
own best learning rate, is the ``fair`` experiment's. Beyond the paper: lambda_min of the
implicit F* Hessian of the tanh nets at the origin (a critical point of F* for odd
activations), the paper's conjecture tested where it could not compute it.

The CNN is the notebook's CIFAR-10 net: conv blocks of 64, 128 and 256 channels (3x3,
'SAME', max-pool 2x2), a fully connected layer of 4096 units and the output layer; under the
paper protocol it predicts as the notebook's (``pool(f(conv(z) + b))`` blocks, ``f(W z)`` and a
linear output layer). Its conv blocks have biases, drawn as PyTorch draws a ``Conv2d``'s by
default (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, ``fan_in = 9 c_in``: the notebook initialises
only the weights), its fully connected layers none (``Linear(bias=False)``); ``cnn_conv_bias =
False`` drops them.

**Initialisation.** §A.4 writes ``W_ij ~ N(0, sigma^2)`` with ``sigma^2 = 5e-3``. Taken as a
variance (std 0.071), a 500-wide layer has gain ~1.6 and the 5-layer linear net starts with a
loss of ~460 -- nowhere near the origin, no plateau. The paper's plateaus (BP stuck at the
loss of the zero output) need std = 5e-3 (PyTorch's ``normal_(0, 5e-3)`` takes a std), which is
what ``init_std`` defaults to here.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pclandscape as pcl

from .._compat import enable_x64
from .base import (PROTOCOL_NOTE, Results, claim, data_label, escape_step, fmt, load_data, protocol_setup, resumable,
                   resume_path, sgd)

NAME = "fig5"
DESCRIPTION = "Figs 5 & 11: BP vs PC escaping the origin (linear/tanh/ReLU MLPs, CNN), gradient norms, lr sweep"

_FALLBACK = {"mnist": ("fashion_mnist", "mnist1d"), "fashion_mnist": ("mnist", "mnist1d")}


@dataclass(frozen=True)
class Config:
    CHOICES: ClassVar[dict] = {"init": ("origin", "zero_rank"), "stop": ("epochs", "loss")}

    seeds: tuple = (0,)
    datasets: tuple = ("mnist", "fashion_mnist")
    activations: tuple = ("linear", "tanh", "relu")
    width: int = 500
    n_layers: int = 5  # fully connected layers (H = 4 hidden)
    init_std: float = 5e-3  # see the module docstring
    init: str = "origin"  # "origin" (Fig 5) or "zero_rank" (Fig 12: all near zero but W_{L-1})
    lr: float = 1e-3
    batch: int = 64
    T: int = 50
    dt: float = 0.1
    stop: str = "epochs"  # "epochs": the notebook's rule (below); "loss": the paper's text (until_loss)
    max_epochs: int = 35  # "epochs": PC trains whole epochs, at most this many (the notebook's MAX_EPOCHS)
    epoch_tol: float = 1e-3  # "epochs": ... until its mean training MSE of an epoch falls by less than this
    pretrain_inference: bool = True  # the notebook's one inference before training (PaperEuler's dt persists)
    max_steps: int = 5000  # "loss": PC trains until loss < until_loss (at most max_steps); BP as many steps
    until_loss: float = 1e-3
    bp_factor: int = 2  # BP runs this many times PC's steps, so its escape is measured or bounded below
    until_fraction: float | None = None  # quick mode: PC stops once its loss is below this fraction of the initial loss
    protocols: tuple = ("paper",)
    cnn: bool = True
    cnn_activations: tuple = ("relu",)
    cnn_channels: tuple = (64, 128, 256)  # the notebook's CIFAR-10 net
    cnn_hidden: int = 4096
    cnn_conv_bias: bool = True  # the notebook's Conv2d biases (PyTorch's default init)
    cnn_max_steps: int = 2000
    cnn_batch: int = 64
    cnn_lr: float | None = None  # default: lr
    cnn_T: int | None = None  # default: T
    cnn_protocols: tuple = ("paper",)
    escape_fraction: float = 0.95  # "leaves the plateau": loss 5 % below its plateau value
    hessian_check: bool = True  # beyond the paper: lambda_min of implicit H_F* at the origin (tanh)
    hessian_batch: int = 64
    data_dir: str | None = None
    data_fallback: bool = True  # False: a missing data set is an error (CLI --no-fallback)


def quick_config() -> Config:
    """A 2-core-CPU variant: narrower nets and lr 1e-2 (10x the paper's), so that PC's plateau
    ends within a few hundred steps (MNIST, Fashion-MNIST; ~800 on the MNIST-1D fallback); BP's
    vanishing gradient is unchanged by the larger step. PC stops once its loss is 10 % below
    its starting plateau (``stop="loss"`` with ``until_fraction``, instead of the notebook's
    epoch rule or the text's loss of 1e-3), and BP runs
    ``bp_factor`` times as many steps. The CNN (CPU convolutions are slow) has 4-8-8 channels,
    batches of 16, T = 20 inference steps and lr 5e-2 (in the f(W z) form of the paper's code PC
    left its plateau at step ~980 of at most 1500)."""
    return Config(
        datasets=("mnist",), width=32, lr=1e-2, stop="loss", max_steps=1500, until_fraction=0.9, cnn_channels=(4, 8, 8),
        cnn_hidden=32, cnn_max_steps=1500, cnn_batch=16, cnn_lr=5e-2, cnn_T=20, hessian_batch=16,
    )


def progress_total(cfg) -> int:
    mlp = len(cfg.datasets) * len(cfg.activations) * len(cfg.protocols) * len(cfg.seeds)
    cnn = len(cfg.cnn_activations) * len(cfg.cnn_protocols) * len(cfg.seeds) if cfg.cnn else 0
    return mlp + cnn


def torch_default_init(key, like):
    """A weight shaped like ``like`` drawn as PyTorch's ``nn.Linear`` / ``nn.Conv2d`` draw their
    own by default (``kaiming_uniform_(a=sqrt(5))``): ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``,
    ``fan_in`` the product of all dimensions but the first. The paper's DNN notebook leaves
    ``W_{L-1}`` at this default for its zero-rank saddle ("other_saddle": every other layer
    gets ``N(0, 5e-3^2)``)."""
    return _torch_uniform(key, like.shape, like)


def _torch_default_bias(key, weight):
    """The bias of the layer of ``weight`` (``(out, ...)``) as PyTorch draws it by default:
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the weight's ``fan_in``."""
    return _torch_uniform(key, weight.shape[:1], weight)


def _torch_uniform(key, shape, weight):
    bound = 1.0 / np.sqrt(int(np.prod(weight.shape[1:])))
    return jax.random.uniform(key, shape, weight.dtype, -bound, bound)


def initial_net(cfg, key, widths_or_cnn, activation):
    """The starting network: near the origin, or near the zero-rank saddle of Fig 12."""
    if widths_or_cnn == "cnn":
        bias = (cfg.cnn_conv_bias,) * 3 + (False, False)
        net = pcl.CNN(key, activation, channels=cfg.cnn_channels, hidden=cfg.cnn_hidden, init_std=cfg.init_std,
                      use_bias=bias)
        if cfg.cnn_conv_bias:  # PyTorch's default Conv2d bias: U(+-1/sqrt(fan_in)), fan_in = c_in * 3 * 3
            keys = jax.random.split(jax.random.fold_in(key, 11), 3)
            conv_b = tuple(_torch_default_bias(k, w) for k, w in zip(keys, net.weights[:3]))
            net = eqx.tree_at(lambda n: n.biases, net, conv_b + (None, None))
    else:
        net = pcl.MLP(key, widths_or_cnn, activation, init_std=cfg.init_std)
    if cfg.init == "zero_rank":  # W_{L-1} at PyTorch's default scale, every other weight near 0
        net = net.with_weights([*net.weights[:-2], torch_default_init(jax.random.fold_in(key, 7), net.weights[-2]),
                                net.weights[-1]])
    return net


def _train_pair(cfg, net, data, protocol, key, max_steps, batch=None, lr=None, T=None, tag=None):
    """:func:`_train_pair_now`, or its result from an interrupted run of the same config
    (``tag`` names the pair; see :func:`base.resumable`)."""
    run = lambda: _train_pair_now(cfg, net, data, protocol, key, max_steps, batch, lr, T, tag)  # noqa: E731
    return resumable(tag, run, 2) if tag is not None else run()


def _train_pair_now(cfg, net, data, protocol, key, max_steps, batch=None, lr=None, T=None, tag=None):
    """PC until its stopping rule, then BP for ``bp_factor`` times as many steps (the notebooks
    trained BP as long as PC; running it longer only measures its escape time, or bounds it
    below, where it would otherwise be cut off); same init and batches.

    PC's stopping rule: ``cfg.stop == "epochs"`` (the notebook's code): whole epochs, until the
    mean training MSE of an epoch (PyTorch's ``MSELoss``, the mean over samples and outputs:
    ``2 / d_y`` times Eq 1) falls by less than ``epoch_tol`` from the previous epoch's, at most
    ``max_epochs``; ``"loss"`` (the paper's text): until the batch loss (Eq 1) is below
    ``until_loss``, at most ``max_steps``. Under :class:`pclandscape.PaperEuler`, and with
    ``pretrain_inference``, PC first runs the notebook's one inference on a shuffled batch
    before training (``train_pc``'s gradient-norm plot); the step size it leaves (halved or
    not) is where training starts, as the notebook's ``PCN.dt`` persisted."""
    x, y = data
    batch = batch or cfg.batch
    pc_net, solver, bp_s, pc_s = protocol_setup(protocol, net, batch, cfg.dt, T or cfg.T)
    if cfg.pretrain_inference and isinstance(solver, pcl.PaperEuler):
        solver = _after_pretraining_inference(pc_net, solver, x, y, batch, jax.random.fold_in(key, 101))
    common = dict(optimizer=sgd(lr or cfg.lr), batch_size=batch, key=key, progress=False)
    if cfg.stop == "epochs":
        pc = _train_epochs(cfg, pc_net, (x, y), solver, pc_s, common, None if tag is None else f"{tag}-pc.eqx")
    else:
        until = cfg.until_loss
        if cfg.until_fraction is not None:  # stop once the escape is visible (the plateau is L at the start)
            until = max(until, cfg.until_fraction * float(pcl.mse_loss(net, jnp.asarray(x[:1024]), jnp.asarray(y[:1024]))))
        _, pc = pcl.train(pc_net, (x, y), rule="pc", solver=solver, steps=max_steps, until_loss=until, grad_scale=pc_s, **common)
    _, bp = pcl.train(net, (x, y), rule="bp", steps=cfg.bp_factor * len(pc), grad_scale=bp_s, **common)
    return bp, pc


def _after_pretraining_inference(net, solver, x, y, batch, key):
    """``solver`` started from the step size that the notebook's inference before training
    leaves on a shuffled batch: :class:`pclandscape.PaperEuler`'s state is its current ``dt``
    (the value the notebook resets to within a call is the one in force at the call's start),
    so a ``PaperEuler`` whose ``dt`` is that value continues exactly where the notebook did."""
    idx = jax.random.permutation(key, x.shape[0])[:batch]
    return solver_after_inference(net, solver, jnp.asarray(x)[idx], jnp.asarray(y)[idx])


def solver_after_inference(net, solver, xb, yb):
    """``solver`` (a :class:`pclandscape.PaperEuler`) continued after one notebook inference
    (``PCN.infer_train``) on the batch ``xb`` ``(N, d_x)``, ``yb`` ``(N, d_y)`` from the
    forward pass: its ``dt`` is the one that inference leaves (halved or not)."""
    _, _, dt = solver.solve_with_state(net, xb, yb, net.feedforward(xb)[:-1], solver.init_state())
    return dataclasses.replace(solver, dt=float(dt))


def epochs_to_run(epoch_losses, tol: float) -> bool:
    """The notebook's stopping rule after an epoch: ``False`` (stop) once the mean training
    loss of the last epoch is less than ``tol`` below the previous epoch's (from epoch 2)."""
    return len(epoch_losses) < 2 or epoch_losses[-2] - epoch_losses[-1] >= tol


def _train_epochs(cfg, net, data, solver, scale, common, checkpoint_name=None):
    """PC trained epoch by epoch under the notebook's rule (:func:`epochs_to_run` on the epoch
    means of PyTorch's ``MSELoss`` = ``2 / d_y`` x Eq 1), at most ``cfg.max_epochs``. Each epoch
    continues the same run through a checkpoint (same data order, the solver's ``dt`` carried),
    so the history is one run's. The checkpoint is kept in the run's resume folder
    (:func:`base.resume_path`, under ``checkpoint_name``) when there is one, so an interrupted
    run continues from its last finished epoch; in a temporary folder otherwise."""
    x, y = data
    per_epoch = x.shape[0] // common["batch_size"]
    to_mse = 2.0 / y.shape[1]
    kept = resume_path(checkpoint_name) if checkpoint_name else None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = kept if kept is not None else os.path.join(tmp, "pc.eqx")
        epoch = 0
        while True:
            _, hist = pcl.train(net, data, rule="pc", solver=solver, steps=(epoch + 1) * per_epoch, grad_scale=scale,
                                checkpoint=ckpt, checkpoint_every=per_epoch, **common)
            epoch = len(hist) // per_epoch  # a resumed run may start ahead
            means = [to_mse * float(np.mean(hist.loss[i * per_epoch:(i + 1) * per_epoch])) for i in range(epoch)]
            if epoch >= cfg.max_epochs or not epochs_to_run(means, cfg.epoch_tol):
                break
    hist.meta["epoch_mean_mse"] = means
    return hist


def _hessian_lambda_min(cfg, net, x, y):
    """``(lambda_min, converged, p, Eq 8's lambda_min)``: lambda_min of the implicit Hessian of F*
    at the origin (all weights 0: a critical point of F* for an odd activation, f(0) = 0), by
    Lanczos in float64, beside the closed form of the linear network (Eq 8): the Hessian at
    W = 0 depends on f only through f(0) = 0, f'(0) = 1, f''(0) = 0, which tanh shares with
    the identity, so the two must agree."""
    with enable_x64(True):
        net64 = jax.tree_util.tree_map(lambda a: jnp.zeros_like(a, jnp.float64) if eqx.is_inexact_array(a) else a, net)
        xb, yb = jnp.asarray(x[: cfg.hessian_batch], jnp.float64), jnp.asarray(y[: cfg.hessian_batch], jnp.float64)
        solver = pcl.Euler(dt=0.5, steps=400, tol=1e-8)  # near the origin the activity Hessian is ~I
        op = pcl.energy_hessian_operator(net64, xb, yb, pcl.Implicit(solver=solver))
        lz = pcl.lanczos(op, k=1, which="smallest", max_iter=300)
        widths = [xb.shape[1], *(w.shape[0] for w in net.weights)]
        eq8 = float(pcl.theory.origin_spectrum(widths, xb, yb, "energy")[0])
        return float(lz.eigenvalues[0]), bool(lz.converged), op.size, eq8


def run(cfg: Config, progress=None) -> Results:
    res = Results(NAME, cfg)
    res.notes.append(PROTOCOL_NOTE)
    res.notes.append(__doc__.split("**Initialisation.**")[1].strip().replace("\n", " "))
    if cfg.cnn and cfg.cnn_conv_bias:
        res.notes.append("The CNN is the notebook's, with conv biases at PyTorch's default U(-1/sqrt(fan_in), "
                         "1/sqrt(fan_in)) (the notebook initialises only the weights near zero): its feature maps "
                         "are not zero at the start, so the CNN does not start at the loss's origin saddle, and BP's "
                         "gradient there need not vanish as the MLPs' does (cnn_conv_bias=false removes them).")
    if cfg.stop == "epochs":
        res.notes.append(f"PC's stopping rule is the notebook's code, not the paper's text (§A.4: 'until the training "
                         f"loss reached 1e-3'): whole epochs until the epoch-mean training MSE falls by less than "
                         f"{cfg.epoch_tol:g} from the previous epoch's, at most {cfg.max_epochs} epochs.")
    runs = {}
    lam = {}
    for dname in cfg.datasets:
        ds = load_data(res, dname, cfg, fallback=_FALLBACK.get(dname, ()))
        x, y = ds.x_train, ds.y_train
        widths = [x.shape[1]] + [cfg.width] * (cfg.n_layers - 1) + [y.shape[1]]
        for act in cfg.activations:
            for seed in cfg.seeds:
                net = initial_net(cfg, jax.random.key(seed), widths, act)
                if cfg.hessian_check and act == "tanh" and seed == cfg.seeds[0]:
                    try:
                        lam[f"{data_label(dname, ds)}_{act}"] = _hessian_lambda_min(cfg, net, x, y)
                    except pcl.NotAtEquilibriumError as e:
                        res.notes.append(f"lambda_min at init of {dname}/{act} not computed: {e}")
                for protocol in cfg.protocols:
                    label = data_label(dname, ds)
                    runs[(label, act, protocol, seed)] = _train_pair(cfg, net, (x, y), protocol, jax.random.key(seed + 1),
                                                                     cfg.max_steps, tag=f"{label}_{act}_{protocol}_s{seed}")
                    if progress:
                        progress.update(1)
    if cfg.cnn:
        try:
            ds = pcl.data.load("cifar10", cfg.data_dir, fallback=("fashion_mnist", "mnist") if cfg.data_fallback else ())
            if ds.name != "cifar10":
                ds = pcl.data.as_images(pcl.data.load(ds.name, cfg.data_dir, flatten=True))
                ds.note = f"cifar10 is not available on this machine; used {ds.name} (28x28 padded to 32x32, 3 channels)"
            res.use_data(ds)
            for act in cfg.cnn_activations:
                for seed in cfg.seeds:
                    net = initial_net(cfg, jax.random.key(seed), "cnn", act)
                    for protocol in cfg.cnn_protocols:
                        runs[("cnn", act, protocol, seed)] = _train_pair(cfg, net, (ds.x_train, ds.y_train), protocol,
                                                                         jax.random.key(seed + 1), cfg.cnn_max_steps, cfg.cnn_batch,
                                                                         cfg.cnn_lr, cfg.cnn_T, tag=f"cnn_{act}_{protocol}_s{seed}")
                        if progress:
                            progress.update(1)
        except pcl.data.DataNotFoundError as e:
            res.notes.append(f"CNN part skipped: {e}")
            res.add(claim(f"{NAME}.cnn", "BP vs PC on the CNN (CIFAR-10, or 28x28 images padded to 3x32x32)",
                          "an image data set", "none available (CIFAR-10, Fashion-MNIST, MNIST): see the notes", None,
                          category="skipped"))
    _claims(cfg, res, runs)
    if lam:
        res.add(claim(f"{NAME}.hessian_nonlinear", "Beyond the paper: the origin is a strict saddle of F* for tanh nets: the "
                      "implicit F* Hessian at W = 0 (a critical point: tanh is odd) has a negative eigenvalue (the "
                      "paper's conjecture for nonlinear nets)",
                      "lambda_min < 0, equal to the linear network's Eq 8 value (tanh'(0) = 1, tanh''(0) = 0) to rel. 1e-6",
                      ", ".join(f"{k}: {fmt(v[0])} vs Eq 8 {fmt(v[3])} (p={v[2]}{'' if v[1] else ', not converged'})"
                                for k, v in lam.items()),
                      all(v[0] < 0 and v[1] and abs(v[0] - v[3]) <= 1e-6 * abs(v[3]) for v in lam.values()), category="finding"))
        res.series["lambda_min_init"] = {k: v[0] for k, v in lam.items()}
    return res


def _claims(cfg, res, runs):
    esc, grad, arrays = {}, {}, res.arrays
    for (dname, act, protocol, seed), (bp, pc) in runs.items():
        tag = f"{dname}_{act}_{protocol}_s{seed}"
        arrays[f"{tag}_bp_loss"], arrays[f"{tag}_pc_loss"] = bp.loss, pc.loss
        arrays[f"{tag}_bp_grad"], arrays[f"{tag}_pc_grad"] = bp.grad_norm, pc.grad_norm
        e_bp, e_pc = escape_step(bp.loss, cfg.escape_fraction), escape_step(pc.loss, cfg.escape_fraction)
        esc.setdefault(protocol, {})[f"{dname}_{act}_s{seed}"] = (e_pc, e_bp, len(bp))
        k = max(1, e_pc if e_pc is not None else len(pc))  # the plateau: the steps before PC escapes
        grad.setdefault(protocol, {})[f"{dname}_{act}_s{seed}"] = (float(np.median(bp.grad_norm[:k])), float(np.median(pc.grad_norm[:k])))
    res.series["escape"] = {p: {k: list(v) for k, v in d.items()} for p, d in esc.items()}
    res.series["plateau_grad_norm"] = {p: {k: list(v) for k, v in d.items()} for p, d in grad.items()}
    for protocol, d in esc.items():
        # BP that never escaped in its n steps is censored: its escape step is >= n
        far = {k: pc is not None and pc <= 0.5 * (n if bp is None else bp) for k, (pc, bp, n) in d.items()}
        res.add(claim(f"{NAME}.escape_{protocol}", f"PC leaves the plateau far earlier than BP ({protocol} protocol)",
                      f"PC escape step <= half BP's (BP runs {cfg.bp_factor}x PC's steps; a BP run that never escapes "
                      "is censored at its length n and counts as >= n)",
                      ", ".join(f"{k}: PC {fmt(pc)} vs BP {fmt(bp) if bp is not None else f'>= {n} (censored)'} (of {n})"
                                for k, (pc, bp, n) in d.items()),
                      all(far.values()), category="paper" if protocol == "paper" else "finding"))
    for protocol, d in grad.items():
        ok = {k: bp < 1e-2 * pc for k, (bp, pc) in d.items()}
        res.add(claim(f"{NAME}.gradients_{protocol}", f"BP's weight gradient vanishes near the saddle, PC's does not (Fig 11, {protocol})",
                      "median over the plateau (the steps before PC escapes): ||g_BP|| < 0.01 ||g_PC|| "
                      "(gradients of Eq 1 and Eq 2)", ", ".join(f"{k}: {bp:.1e} vs {pc:.1e}" for k, (bp, pc) in d.items()),
                      all(ok.values()), category="paper" if protocol == "paper" else "finding"))


def plot(res: Results) -> dict:
    from .plotting import BP_COLOR, PC_COLOR, new_figure

    tags = sorted({k.rsplit("_bp_loss", 1)[0] for k in res.arrays if k.endswith("_bp_loss")})
    figs = {}
    names = ("fig5_losses", "fig11_gradients") if res.name == "fig5" else (f"{res.name}_losses", f"{res.name}_gradients")
    for (what, ylabel), fname in zip((("loss", "train loss"), ("grad", "weight-gradient norm")), names):
        ncols = min(3, len(tags))
        nrows = -(-len(tags) // ncols)
        fig, axes = new_figure(nrows, ncols, size=(3.3, 2.6))
        for ax, tag in zip(axes.ravel(), tags):
            ax.semilogy(res.arrays[f"{tag}_bp_{what}"], color=BP_COLOR, label="BP")
            ax.semilogy(res.arrays[f"{tag}_pc_{what}"], color=PC_COLOR, label="PC")
            ax.set_title(tag, fontsize=8)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
        for ax in axes.ravel()[len(tags):]:
            ax.axis("off")
        fig.suptitle(("Fig 5: training loss" if what == "loss" else "Fig 11: weight-gradient norms") + f" ({res.name})", fontsize=10)
        fig.tight_layout()
        figs[fname] = fig
    return figs
