"""Landscape slices and directions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclandscape as pcl
from pclandscape import landscape


def test_slices_of_a_quadratic(x64):
    a = jnp.diag(jnp.array([-1.0, 2.0, 0.5]))
    fn = lambda p: 0.5 * p["w"] @ a @ p["w"]
    params = {"w": jnp.zeros(3)}
    d1, d2 = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.0])
    s = landscape.slice_2d(fn, params, (d1, d2), span=((-1, 1), (-2, 2)), resolution=(5, 7))
    assert s.values.shape == (7, 5)
    aa, bb = np.meshgrid(s.alphas, s.betas)
    np.testing.assert_allclose(s.values, 0.5 * (-(aa**2) + 2 * bb**2), atol=1e-14)
    s1 = landscape.slice_1d(fn, params, {"w": d2}, span=2.0, resolution=9)
    np.testing.assert_allclose(s1.values, s1.alphas**2, atol=1e-14)
    v_min, v_max = landscape.hessian_directions(fn, params)
    np.testing.assert_allclose(jnp.abs(v_min["w"]), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(jnp.abs(v_max["w"]), [0, 1, 0], atol=1e-12)


def test_slice_of_the_numerical_equilibrated_energy_matches_theory(x64, rng):
    ws = [jnp.asarray(rng.standard_normal(s) * 0.3) for s in [(3, 2), (2, 3)]]
    x, y = jnp.asarray(rng.standard_normal((6, 2))), jnp.asarray(rng.standard_normal((6, 2)))
    net = pcl.MLP.from_weights(ws)
    f_num = lambda w: pcl.infer(net.with_weights(w), x, y, pcl.ExactLinear()).energy
    f_th = lambda w: pcl.theory.equilibrated_energy(w, x, y)
    dirs = landscape.random_direction(jax.random.key(0), ws), landscape.random_direction(jax.random.key(1), ws)
    a = landscape.slice_2d(f_num, ws, dirs, span=1.0, resolution=6)
    b = landscape.slice_2d(f_th, ws, dirs, span=1.0, resolution=6)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-11)


def test_random_direction_normalisation(rng):
    params = [jnp.asarray(rng.standard_normal((4, 3))), jnp.zeros((2, 4))]
    d = landscape.random_direction(jax.random.key(0), params, normalize="filter")
    np.testing.assert_allclose(jnp.linalg.norm(d[0], axis=1), jnp.linalg.norm(params[0], axis=1), rtol=1e-5)
    assert float(jnp.max(jnp.abs(d[1]))) == 0.0  # zero filters stay zero: use "layer" at the origin
    d = landscape.random_direction(jax.random.key(0), params, normalize="layer")
    assert float(jnp.linalg.norm(d[1])) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="normalize="):
        landscape.random_direction(jax.random.key(0), params, normalize="unit")
