"""Time grids: linear and Movie Gen / Mochi linear-quadratic (Movie Gen §3.1.2)."""

import numpy as np
import pytest

from stiv_jax.sampling import schedules


def mochi_fraction(num_steps, threshold):
    """Mochi's coefficient form (a, b, c with d = L − τS), (Movie Gen §3.1.2 paraphrase)."""
    lin_steps = num_steps // 2
    quad_steps = num_steps - lin_steps
    d = lin_steps - threshold * num_steps
    a = d / (lin_steps * quad_steps**2)
    b = threshold / lin_steps - 2 * d / quad_steps**2
    c = a * lin_steps**2
    f = [i * threshold / lin_steps for i in range(lin_steps)]
    f += [a * i**2 + b * i + c for i in range(lin_steps, num_steps)]
    return np.array(f + [1.0])


def test_linear():
    t = schedules.linear(4)
    np.testing.assert_allclose(t, [0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="num_steps"):
        schedules.linear(0)


@pytest.mark.parametrize("num_steps,emulated", [(50, 250), (50, 1000), (7, 40), (30, 30), (3, 9)])
def test_linear_quadratic_properties(num_steps, emulated):
    t = schedules.linear_quadratic(num_steps, emulated)
    half = num_steps // 2
    assert t.shape == (num_steps + 1,)
    assert t[0] == 0.0 and t[-1] == 1.0
    assert np.all(np.diff(t) > 0)
    # The first half is exactly the first steps of the emulated linear grid.
    np.testing.assert_allclose(t[: half + 1], schedules.linear(emulated)[: half + 1], atol=1e-15)
    # C¹ join: on integers a quadratic q with q'(L) = slope has q(L+1) − q(L) = slope + a while
    # its second differences are 2a, so the step jump at the join is half the quadratic's own.
    steps = np.diff(t)
    second = np.diff(steps)
    curvature = second[half:]  # second differences inside the quadratic part (>= 1 of them)
    np.testing.assert_allclose(curvature, curvature[0], atol=1e-12)
    np.testing.assert_allclose(steps[half] - steps[half - 1], curvature[0] / 2, atol=1e-12)
    # First differences are continuous: no jump anywhere exceeds the quadratic's curvature.
    assert np.max(np.abs(second)) <= curvature[0] + 1e-12


@pytest.mark.parametrize("num_steps,emulated", [(50, 250), (50, 1000), (64, 1280), (9, 20)])
def test_matches_mochi_coefficient_form(num_steps, emulated):
    threshold = (num_steps // 2) / emulated  # τ = L/N emulates N linear steps
    np.testing.assert_allclose(
        schedules.linear_quadratic(num_steps, emulated), mochi_fraction(num_steps, threshold), atol=1e-12
    )


def test_published_values():
    # Mochi's default (50 steps, τ = 0.025 ⇒ N = 1000) and Movie Gen's N = 250.
    t = schedules.linear_quadratic(50, 1000)
    np.testing.assert_allclose(t[[25, 26, 27, 49]], [0.025, 0.0275, 0.0331, 0.9245], atol=6e-5)
    t = schedules.linear_quadratic(50, 250)
    np.testing.assert_allclose(
        t[[24, 25, 26, 27, 47, 48, 49]], [0.096, 0.1, 0.1053, 0.1131, 0.8075, 0.8691, 0.9333], atol=6e-5
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="emulated_steps"):
        schedules.linear_quadratic(50, 40)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.linear_quadratic(1, 10)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.get("cosine", 10)
    np.testing.assert_array_equal(schedules.get("linear_quadratic", 50), schedules.linear_quadratic(50, 250))
