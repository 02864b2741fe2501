"""PC inference: minimise the energy over the hidden activities (Eq 3).

All solvers share one small interface (:class:`AbstractSolver`) and are used through
:func:`infer`, which starts from the feedforward pass and returns an :class:`Equilibrium`
with its convergence diagnostics.

**Step sizes are per sample** (docs/conventions.md): sample ``i`` moves along ``-dF_i/dz_i`` where
``F_i = 1/2 sum_l ||z_{l,i} - f_l(z_{l-1,i})||^2`` is its own energy (``F = mean_i F_i``).
Since samples do not interact, this is the gradient of ``sum_i F_i``; differentiating the
batch *mean* instead would shrink every step by ``1/N``. The result for one sample therefore
does not depend on the batch it is in (the adaptive :class:`Heun` solver even picks its step
sizes per sample).

The residual reported everywhere is ``grad_norm = max_i ||dF_i/dz_i||_2`` (the norm over all
hidden layers of one sample, worst sample of the batch): a batch-size independent measure of
the distance to the equilibrium ``dF/dz = 0``. For ReLU MLPs, whose equilibria sit on the
kinks of the activation where the gradient jumps, ``dF_i/dz_i`` is the min-norm subgradient
(:func:`pclandscape.kinks.stationarity_residual`; the gradient wherever ``F_i`` is smooth).

**Float32 on GPUs.** JAX computes float32 matrix products on recent NVIDIA GPUs in TF32 by
default, whose rounding (about 1e-3 relative) puts a floor under the residual: on an H100 a
784-500-500-10 tanh net stalled at ``grad_norm ~ 1e-2`` with every solver, and reached 1e-5
(Newton: 8 iterations) only under ``jax.default_matmul_precision("highest")``. Run inference
that must be verified to a float32 tolerance under that setting (or in float64); fixed-step
training (the paper's T = 50 Euler steps) does not need it.

**Layout.** ``_base`` (the solver interface), one module per solver (``_euler``: Euler and
PaperEuler, ``_heun``, ``_exact``: ExactLinear, ``_newton``, ``_epc``: error-based), ``_infer`` (infer, Equilibrium,
the default solver, equilibrated_energy), ``_verify`` (verify_equilibrium: the residual in float64).
"""

from __future__ import annotations

from .._energies import activity_grad as activity_grad
from ._base import AbstractSolver as AbstractSolver
from ._epc import EPC as EPC
from ._euler import Euler as Euler, PaperEuler as PaperEuler
from ._exact import ExactLinear as ExactLinear
from ._heun import Heun as Heun
from ._infer import (
    Equilibrium as Equilibrium,
    default_solver as default_solver,
    equilibrated_energy as equilibrated_energy,
    infer as infer,
)
from ._newton import BlockTridiagonal as BlockTridiagonal, CG as CG, Newton as Newton
from ._verify import EquilibriumCheck as EquilibriumCheck, verify_equilibrium as verify_equilibrium

__all__ = [
    "AbstractSolver",
    "Euler",
    "PaperEuler",
    "Heun",
    "ExactLinear",
    "EPC",
    "Newton",
    "CG",
    "BlockTridiagonal",
    "Equilibrium",
    "infer",
    "equilibrated_energy",
    "verify_equilibrium",
    "EquilibriumCheck",
    "activity_grad",
    "default_solver",
]
