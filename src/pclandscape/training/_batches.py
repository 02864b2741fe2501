"""Where a run's batches come from: shuffled index streams (resumable by step), batch
iterators, the data on the device, and the sharding of a batch across devices."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

__all__ = ["iter_batches", "is_array_pair", "index_stream", "device_data", "batch_sharding", "check_finite"]


def array_batches(x, y, batch_size: int, key, start_step: int):
    for idx in index_stream(x.shape[0], batch_size, key, start_step):
        yield jnp.asarray(x[idx]), jnp.asarray(y[idx])  # host-side gather, one transfer


def iter_batches(net, data, batch_size, key, start_step):
    """The batches of the per-step loop: ``data`` as an ``(x, y)`` pair (checked against ``net``
    whole, before any batch is cut, as :func:`device_data` does for the fused loop) or an iterable
    of ``(x, y)`` batches (each checked to be a pair as it comes)."""
    if is_array_pair(data):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"data has {x.shape[0]} inputs but {y.shape[0]} targets.")
        net.check_data(x, y)  # shapes only: the message names the data's own shapes
        return array_batches(x, y, batch_size, key, start_step)
    if hasattr(data, "shape"):
        raise ValueError(
            f"data is a single array of shape {tuple(data.shape)}; pass a pair (x, y) of inputs and targets "
            "(or an iterable of (x, y) batches)."
        )
    if isinstance(data, Iterable):

        def gen():
            seen = 0
            while True:
                empty = True
                for batch in data:
                    empty = False
                    if seen < start_step:
                        seen += 1
                        continue
                    yield _as_pair(batch, seen)
                    seen += 1
                if empty:
                    raise ValueError("data yielded no batches.")

        return gen()
    raise ValueError(
        "data must be a pair (x, y) of arrays or an iterable of (x, y) batches, "
        f"got {type(data).__name__}."
    )


def _as_pair(batch, index: int):
    """``batch`` as ``(x, y)``, or a ``ValueError`` saying what the iterable yielded instead."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch
    what = (f"an array of shape {tuple(batch.shape)}" if hasattr(batch, "shape")
            else f"a {type(batch).__name__}" + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else ""))
    raise ValueError(f"data yielded {what} as batch {index}; an iterable of batches must yield pairs (x, y).")


def is_array_pair(data) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape") and hasattr(data[1], "shape")


@functools.partial(jax.jit, static_argnums=(2, 3))
def permutations(key, first_epoch, count: int, n: int):
    return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(first_epoch + jnp.arange(count))


def index_stream(n: int, batch_size: int, key, start_step: int, total_steps: int | None = None):
    """Batch index arrays (resumable by step): epoch ``e`` visits the samples in the order
    ``jax.random.permutation(fold_in(key, e), n)`` (``arange(n)`` without a key), in
    ``n // batch_size`` fixed-size batches (the remainder of each epoch is dropped).

    Permutations are drawn for many epochs per call (one call per epoch would cost a
    dispatch per step in full-batch training), but no more than the ``total_steps`` of the run
    need (drawing 256 permutations of 4000 samples took 0.6 s on a 2-core CPU).
    """
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({n} samples); lower it.")
    n_batches = n // batch_size
    chunk = max(1, min(256, (1 << 20) // n))
    if total_steps is not None:
        chunk = max(1, min(chunk, -(-(total_steps - start_step) // n_batches) + 1))
    cache_start, cache = None, None
    step = start_step
    while True:
        epoch, offset = divmod(step, n_batches)
        if key is None:
            perm = np.arange(n)
        else:
            if cache is None or not cache_start <= epoch < cache_start + chunk:
                cache_start, cache = epoch, np.asarray(permutations(key, epoch, chunk, n))
            perm = cache[epoch - cache_start]
        while offset < n_batches:
            yield perm[offset * batch_size : (offset + 1) * batch_size]
            offset += 1
            step += 1


def device_data(net, data) -> tuple[Array, Array]:
    """An ``(x, y)`` pair of arrays on the device, checked against ``net`` (fused training)."""
    x_all, y_all = jnp.asarray(data[0]), jnp.asarray(data[1])
    if x_all.shape[0] != y_all.shape[0]:
        raise ValueError(f"data has {x_all.shape[0]} inputs but {y_all.shape[0]} targets.")
    net.check_data(x_all, y_all)  # shapes only: the message names the data's own shapes
    check_finite(x_all, y_all, "data")
    return x_all, y_all


def check_finite(x, y, what: str) -> None:
    """Raise ``ValueError`` when the inputs ``x`` hold NaN or inf, or the targets ``y`` hold inf
    (NaN in a target marks an unobserved entry, see Eq 1), naming how many and the first sample:
    training on them would only report a divergence whose cause is not the learning rate."""
    for name, bad, allowed in (("inputs x", ~jnp.isfinite(x), "NaN or inf"), ("targets y", jnp.isinf(y), "inf")):
        per_sample = jnp.any(bad.reshape(bad.shape[0], -1), axis=1)
        n_bad = int(jnp.sum(bad))
        if n_bad:
            first = int(jnp.argmax(per_sample))
            raise ValueError(
                f"{what}: the {name} hold {n_bad} {allowed} value(s), the first in sample {first}; remove or "
                "impute those samples before training (NaN is allowed in targets only, where it marks an "
                "unobserved entry)."
            )



def batch_sharding(batch_size: int, data_parallel: bool | None, fused: bool):
    """The sharding of a batch across the local devices, or None (see ``train(data_parallel=)``)."""
    devices = jax.local_devices()
    if data_parallel is False or (data_parallel is None and (len(devices) < 2 or not fused)):
        return None
    if data_parallel and not fused:
        raise ValueError("data_parallel=True needs data as a pair of arrays (x, y) and steps_per_call > 1.")
    if batch_size % len(devices):
        if data_parallel:
            raise ValueError(
                f"data_parallel=True shards each batch over the {len(devices)} local devices: batch_size="
                f"{batch_size} must be a multiple of {len(devices)}."
            )
        return None
    if len(devices) < 2:
        return None
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

