"""Training by backprop (BP) and by predictive coding (PC), and the training history.

* :func:`bp_step`: one optax update along the gradient of the MSE loss (Eq 1).
* :func:`pc_step`: inference to equilibrium with a solver (Eq 3), then one optax update
  along the weight gradient of the energy (Eq 2) at the equilibrium activities (Eq 4).
  At an exact equilibrium this is the gradient of ``F*(theta)`` (the envelope theorem:
  ``dF*/dtheta = dF/dtheta + dF/dz dz*/dtheta`` and ``dF/dz = 0``).

Both are jit-compiled and can be called from user code. ``grad_scale`` multiplies the
gradient before the optimizer sees it (used by the experiments' ``protocol="paper"``, which
reproduces the different gradient scalings of the paper's BP and PC code; ``1.0`` means
Eqs 1 and 2 exactly).

:func:`train` runs either rule over batches of data with evaluation, progress display,
checkpoints, and a clear error if the run diverges.

**Layout.** ``_steps`` (one step of each rule, :class:`StepInfo`), ``_batches`` (index
streams, batch iterators, sharding), ``_fused`` (steps fused in one ``lax.scan``),
``_evaluate``, ``_history`` (:class:`History` and its file format), ``_recorder`` (the
recorder both drivers share, and checkpoints), ``_loop`` (:func:`train`, :func:`train_many`).
"""

from __future__ import annotations

from ._evaluate import evaluate as evaluate
from ._history import History as History
from ._loop import train as train, train_many as train_many
from ._steps import BP as BP, PC as PC, StepInfo as StepInfo, bp_step as bp_step, init_opt_state as init_opt_state, pc_step as pc_step

__all__ = ["BP", "PC", "StepInfo", "bp_step", "pc_step", "init_opt_state", "train", "train_many", "History", "evaluate"]
