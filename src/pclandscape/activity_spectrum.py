"""The spectrum of the activity Hessian ``d^2 F_i / dz_i^2``: how hard inference is.

Gradient-flow inference converges at a rate set by the activity Hessian's smallest
eigenvalue and must keep its step below ``2 / lambda_max``; the condition number
``lambda_max / lambda_min`` is the number of Euler steps per e-fold of the residual. The
muPC paper (Innocenti et al., arXiv:2505.13124) reports that it grows with width, depth and
training time in standard parameterisations; :func:`activity_spectrum` measures it and
:func:`activity_condition_number` records it during training (``train(metrics=...)``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float
from scipy.linalg.lapack import dpotrf, dtrtrs
from threadpoolctl import threadpool_limits

from ._energies import per_sample_energies
from .activity_hessian import activity_hessian_blocks, dense_activity_hessian
from .curvature import HessianOperator, lanczos
from .networks import PCNetwork, has_block_closed_form

__all__ = ["ActivitySpectrum", "activity_spectrum", "activity_condition_number"]


class ActivitySpectrum(NamedTuple):
    """Extreme eigenvalues of each sample's activity Hessian.

    Attributes:
        lambda_min: ``(N,)`` smallest eigenvalues.
        lambda_max: ``(N,)`` largest eigenvalues.
        condition: ``(N,)`` ``lambda_max / lambda_min`` (inf where ``lambda_min <= 0``: the
            energy is not convex in the activities there).
        method: ``"dense"`` (``eigvalsh`` of the assembled Hessians), ``"bisection"``
            (bisection on block Cholesky factorisations of MLPs) or ``"lanczos"``.
    """

    lambda_min: Array
    lambda_max: Array
    condition: Array
    method: str


def _activities(net, x, activities):
    return tuple(net.feedforward(x)[:-1]) if activities is None else tuple(activities)


def _sample_hvp(args, v):
    """``d^2 F_i / dz_i^2 v`` for one sample (``args = (net, x_i, y_i, z_i)``, batch axis of 1
    on ``x_i``, ``y_i``, none on ``z_i``; ``v`` flat), by forward-over-reverse autodiff."""
    net, xi, yi, zi = args
    flat, unravel = ravel_pytree(zi)

    def energy(f):
        return per_sample_energies(net, tuple(a[None] for a in unravel(f)), xi, yi)[0]

    return jax.jvp(jax.grad(energy), (flat,), (v,))[1]


def activity_spectrum(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    activities=None,
    *,
    method: str = "auto",
    dense_max: int = 2048,
    max_iter: int | None = None,
    rtol: float = 1e-10,
) -> ActivitySpectrum:
    """Extreme eigenvalues and condition number of ``d^2 F_i / dz_i^2`` for every sample.

    At ``activities`` (default: the feedforward pass, where inference starts; pass
    ``pcl.infer(...).activities`` for the equilibrium). For a linear network the Hessian does
    not depend on the activities. ``m`` is the number of activities per sample.

    Methods (``method="auto"``: dense when ``m <= dense_max``, else bisection for MLPs and
    Lanczos for other networks):

    - ``"dense"``: ``eigvalsh`` of the assembled ``(m, m)`` Hessians (closed-form blocks for
      MLPs, autodiff otherwise).
    - ``"bisection"`` (MLPs: :func:`pclandscape.networks.has_block_closed_form`): bisection on
      the closed-form block-tridiagonal Hessian. ``H - sigma I`` is positive definite
      exactly when ``sigma < lambda_min``, which its block Cholesky factorisation decides
      (float64 on the host, ``O(H n^3)``, stopped at the first block that fails); bisection
      between Gershgorin's bound and the smallest diagonal entry gives ``lambda_min`` to
      ``rtol`` relative (or to ~1e-12 of ``||H||``, the factorisation's resolution), and
      ``sigma I - H`` gives ``lambda_max`` alike. No iteration that may fail to converge,
      and a cost (about 80 factorisations per sample) that does not grow with the
      conditioning (``benchmarks/spectrum.py`` times it against Lanczos).
    - ``"lanczos"``: Lanczos on Hessian-vector products, one sample at a time (``max_iter``
      products per end and sample, default :func:`pclandscape.lanczos`'s; a warning names the
      samples whose runs did not converge, whose values are then estimates).

    ``rtol``: the bisection's relative tolerance on each eigenvalue.
    """
    net.check_data(x, y)
    if method not in ("auto", "dense", "bisection", "lanczos"):
        raise ValueError(f"activity_spectrum(method={method!r}): use 'auto', 'dense', 'bisection' or 'lanczos'.")
    if method == "bisection" and not has_block_closed_form(net):
        raise ValueError(f"activity_spectrum(method='bisection') needs an MLP predicting W f(z) (block-tridiagonal "
                         f"activity Hessian); this is a {type(net).__name__}: use 'dense' or 'lanczos'.")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"activity_spectrum(rtol={rtol!r}) must be a number in (0, 1).")
    z = _activities(net, x, activities)
    m = sum(int(np.prod(a.shape[1:])) for a in z)
    if m == 0:
        raise ValueError("this network has no hidden layer: there are no activities to infer.")
    if method == "auto":
        method = "dense" if m <= dense_max else "bisection" if has_block_closed_form(net) else "lanczos"
    if method == "dense":
        ev = jnp.linalg.eigvalsh(dense_activity_hessian(net, z, x, y))
        lo, hi = ev[:, 0], ev[:, -1]
    elif method == "bisection":
        lo, hi = _bisection_spectrum(net, z, x, y, rtol)
    else:
        lo, hi = _lanczos_spectrum(net, z, x, y, m, max_iter)
    cond = jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1.0), jnp.inf)
    return ActivitySpectrum(lo, hi, cond, method)


def _lanczos_spectrum(net, z, x, y, m, max_iter):
    los, his, unconverged = [], [], []
    for i in range(x.shape[0]):
        # One operator type for every sample (the sample's arrays are arguments, the
        # product a module-level function): the Lanczos programs compile once, not once per
        # sample and end (16 compilations of a 128-layer net took 4 minutes and exhausted
        # the process's memory maps).
        op = HessianOperator(fn=_sample_hvp, args=(net, x[i : i + 1], y[i : i + 1], tuple(a[i] for a in z)),
                             size=m, dtype=z[0].dtype)
        ends = [lanczos(op, k=1, which=which, max_iter=max_iter) for which in ("smallest", "largest")]
        los.append(ends[0].eigenvalues[0])
        his.append(ends[1].eigenvalues[0])
        if not all(e.converged for e in ends):
            unconverged.append(i)
    if unconverged:
        warnings.warn(f"activity_spectrum: Lanczos did not converge for sample(s) {unconverged} of {x.shape[0]} "
                      f"within max_iter={max_iter or min(m, 1024)} products: their eigenvalues are estimates. "
                      "Pass a larger max_iter.", RuntimeWarning, stacklevel=3)
    return jnp.stack(los), jnp.stack(his)


_BLOCK_BYTES = 1 << 28  # the closed-form blocks of at most this many bytes at once (a chunk of samples)


def _positive_definite(diag, off, shift, sign) -> bool:
    """Whether ``sign * (H - shift I)`` is positive definite, for ``H`` block tridiagonal
    (``diag[l]``: ``(n_l, n_l)``, ``off[l]``: ``(n_{l+1}, n_l)``, float64): block Cholesky,
    ``S_1 = D_1``, ``S_l = D_l - C_{l-1} S_{l-1}^{-1} C_{l-1}^T`` (Haynsworth: positive
    definite exactly when every ``S_l`` is), stopped at the first ``S_l`` that is not."""
    chol = None
    for l, d in enumerate(diag):
        s = sign * d
        s[np.diag_indices_from(s)] -= sign * shift
        if l > 0:
            y, _ = dtrtrs(chol, sign * off[l - 1].T, lower=1)  # R^{-1} C^T with S_{l-1} = R R^T
            s -= y.T @ y
        chol, info = dpotrf(s, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return False
    return True


def _bisect(diag, off, sign, outer, inner, rtol, floor) -> float:
    """The extreme eigenvalue of ``H`` at the end ``sign`` (+1: smallest, -1: largest),
    bracketed by ``outer`` (Gershgorin's bound: ``sign * (H - outer I)`` positive definite)
    and ``inner`` (a diagonal entry, a Rayleigh quotient: not positive definite there)."""
    lo, hi = outer, inner  # positive definite at lo, not at hi (in the sign's direction)
    while abs(hi - lo) > max(rtol * max(abs(lo), abs(hi)), floor):
        mid = 0.5 * (lo + hi)
        if _positive_definite(diag, off, mid, sign):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _gershgorin(diag, off):
    """``(lower, upper)`` bounds of the spectrum of the block-tridiagonal ``H`` (row sums)."""
    lows, highs = [], []
    for l, d in enumerate(diag):
        radius = np.abs(d).sum(1) - np.abs(np.diag(d))
        if l > 0:
            radius += np.abs(off[l - 1]).sum(1)  # row of layer l against layer l - 1
        if l < len(off):
            radius += np.abs(off[l]).sum(0)  # against layer l + 1 (the transpose's rows)
        lows.append(np.min(np.diag(d) - radius))
        highs.append(np.max(np.diag(d) + radius))
    return float(min(lows)), float(max(highs))


# One BLAS thread: the blocks are small (n x n per layer), and BLAS threads that spin while
# other work holds the cores made the bisection 45x slower (415 s against 9 s at 32 layers).
@threadpool_limits.wrap(limits=1, user_api="blas")
def _bisection_spectrum(net, z, x, y, rtol):
    """``(lambda_min, lambda_max)`` per sample by bisection on block Cholesky factorisations
    (see :func:`activity_spectrum`, ``method="bisection"``)."""
    sizes = [int(a.shape[1]) for a in z]
    n = x.shape[0]
    per_sample = 8 * sum(a * a + a * b for a, b in zip(sizes, sizes[1:] + [0]))
    chunk = max(1, _BLOCK_BYTES // per_sample)
    los, his = [], []
    for c0 in range(0, n, chunk):
        sl = slice(c0, min(n, c0 + chunk))
        diag, off = activity_hessian_blocks(net, tuple(a[sl] for a in z), x[sl], y[sl])
        diag = [np.asarray(d, np.float64) for d in diag]
        off = [np.asarray(c, np.float64) for c in off]
        for i in range(sl.stop - sl.start):
            los_i, his_i = _sample_ends(diag, off, i, rtol)
            los.append(los_i)
            his.append(his_i)
    dtype = z[0].dtype
    return jnp.asarray(np.asarray(los), dtype), jnp.asarray(np.asarray(his), dtype)


def _sample_ends(diag, off, i, rtol) -> tuple[float, float]:
    """``(lambda_min, lambda_max)`` of sample ``i`` of the stacked blocks (leading axis ``N`` or 1)."""
    d_i = [d[min(i, d.shape[0] - 1)] for d in diag]
    o_i = [c[min(i, c.shape[0] - 1)] for c in off]
    g_lo, g_hi = _gershgorin(d_i, o_i)
    centre = np.concatenate([np.diag(d) for d in d_i])
    floor = 1e3 * np.finfo(np.float64).eps * max(abs(g_lo), abs(g_hi), np.finfo(np.float64).tiny)
    return (_bisect(d_i, o_i, 1.0, g_lo - floor, float(np.min(centre)), rtol, floor),
            _bisect(d_i, o_i, -1.0, g_hi + floor, float(np.max(centre)), rtol, floor))


def activity_condition_number(net: PCNetwork, x: Array, y: Array) -> Array:
    """The largest condition number of the activity Hessians of a batch at the feedforward
    pass (dense; traceable), for ``pcl.train(..., metrics={"activity_cond":
    pcl.activity_condition_number})``."""
    ev = jnp.linalg.eigvalsh(dense_activity_hessian(net, _activities(net, x, None), x, y))
    lo, hi = ev[:, 0], ev[:, -1]
    return jnp.max(jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1.0), jnp.inf))
