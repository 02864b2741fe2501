"""pclandscape: train predictive coding networks and study their energy landscape.

The public API (documented in docs/; names marked *contract* in their docstrings are stable)::

    import pclandscape as pcl
    net = pcl.MLP(key, widths=[784, 300, 10], activation="tanh", init_std=0.07)
    eq = pcl.infer(net, x, y, solver=pcl.Euler(dt=0.1, steps=50))
    net, history = pcl.train(net, (x, y), rule="pc", steps=1000)
"""

from . import curvature, data, kinks, landscape, theory
from ._version import __version__
from .activity_spectrum import ActivitySpectrum, activity_condition_number, activity_spectrum
from .critical_points import (
    CriticalPoint,
    CriticalPointSearch,
    ZeroLayersPoint,
    classify_critical_point,
    directional_derivatives,
    find_critical_point,
    zero_layers_critical_point,
)
from .curvature import (
    Eigenspectrum,
    HessianOperator,
    LanczosResult,
    eigenspectrum,
    gradient,
    hessian,
    hessian_operator,
    hvp,
    lanczos,
    spectral_density,
)
from .errors import DataError, DataNotFoundError, DivergenceError, NotAtEquilibriumError
from .hessians import (
    Implicit,
    Theory,
    Unrolled,
    energy_hessian,
    energy_hessian_operator,
    implicit_energy_operator,
    loss_hessian,
    loss_hessian_operator,
)
from .inference import (
    CG,
    AbstractSolver,
    BlockTridiagonal,
    EPC,
    Equilibrium,
    Euler,
    ExactLinear,
    Heun,
    Newton,
    PaperEuler,
    activity_grad,
    default_solver,
    EquilibriumCheck,
    equilibrated_energy,
    infer,
    verify_equilibrium,
)
from .kinks import stationarity_residual
from .networks import CNN, MLP, NTP, SP, MuPC, Parameterisation, PCNetwork, weights
from .objectives import layer_energies, mse_loss, pc_energy, sample_energies
from .training import BP, PC, History, StepInfo, bp_step, evaluate, init_opt_state, pc_step, train, train_many

__all__ = [
    "__version__",
    "theory",
    "curvature",
    "data",
    "landscape",
    "kinks",
    # networks
    "ActivitySpectrum",
    "activity_spectrum",
    "activity_condition_number",
    "PCNetwork",
    "Parameterisation",
    "SP",
    "MuPC",
    "NTP",
    "MLP",
    "CNN",
    "weights",
    # objectives
    "mse_loss",
    "pc_energy",
    "layer_energies",
    "sample_energies",
    # inference
    "AbstractSolver",
    "Euler",
    "Heun",
    "ExactLinear",
    "EPC",
    "Newton",
    "CG",
    "BlockTridiagonal",
    "PaperEuler",
    "Equilibrium",
    "infer",
    "equilibrated_energy",
    "verify_equilibrium",
    "EquilibriumCheck",
    "activity_grad",
    "stationarity_residual",
    "default_solver",
    # training
    "StepInfo",
    "bp_step",
    "pc_step",
    "init_opt_state",
    "train",
    "train_many",
    "BP",
    "PC",
    "evaluate",
    "History",
    # curvature
    "HessianOperator",
    "hessian_operator",
    "hessian",
    "hvp",
    "gradient",
    "Eigenspectrum",
    "eigenspectrum",
    "spectral_density",
    "LanczosResult",
    "lanczos",
    "energy_hessian",
    "energy_hessian_operator",
    "loss_hessian",
    "loss_hessian_operator",
    "implicit_energy_operator",
    "Implicit",
    "Unrolled",
    "Theory",
    "CriticalPoint",
    "classify_critical_point",
    "directional_derivatives",
    "CriticalPointSearch",
    "find_critical_point",
    "ZeroLayersPoint",
    "zero_layers_critical_point",
    # errors
    "DivergenceError",
    "DataNotFoundError",
    "DataError",
    "NotAtEquilibriumError",
    # sweeps (imported on first use)
    "sweep",
]


def __getattr__(name: str):
    # ``pcl.sweep`` is the sweep engine, which runs the experiments; it is imported on first
    # use so that importing the library never imports the experiments (nor Ray).
    if name == "sweep":
        from .experiments.sweep import run_sweep

        return run_sweep
    raise AttributeError(f"module 'pclandscape' has no attribute {name!r}")
