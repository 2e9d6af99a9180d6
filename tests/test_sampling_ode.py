"""ODE integration against the exact Gaussian flow (stiv_jax/sampling/analytic.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.sampling import analytic, ode, schedules

MEAN = jnp.array([2.0, -1.0, 0.5])
STD = jnp.array([0.5, 1.5, 0.1])


def velocity(x, t):
    return analytic.gaussian_velocity(x, t, MEAN, STD)


@pytest.fixture(scope="module")
def noise():
    return jax.random.normal(jax.random.key(0), (4096, 3))


def endpoint_error(noise, num_steps, solver):
    """Max error at t = 1 relative to 1 + |exact| (the error grows with |x|)."""
    x1 = ode.integrate(velocity, noise, schedules.linear(num_steps), solver)
    exact = analytic.gaussian_flow_endpoint(noise, MEAN, STD)
    return float(jnp.max(jnp.abs(x1 - exact) / (1 + jnp.abs(exact))))


@pytest.mark.parametrize("solver,num_steps,tol", [("euler", 1000, 3e-3), ("heun", 200, 1e-4)])
def test_reproduces_gaussian(noise, solver, num_steps, tol):
    assert endpoint_error(noise, num_steps, solver) < tol
    x1 = ode.integrate(velocity, noise, schedules.linear(num_steps), solver)
    # Hence the sample statistics: the target mean/std up to the Monte-Carlo error of 4096 draws.
    assert jnp.all(jnp.abs(jnp.mean(x1, 0) - MEAN) < 4 * STD / np.sqrt(len(noise)))
    np.testing.assert_allclose(jnp.std(x1, 0), STD, rtol=0.05)


@pytest.mark.parametrize("solver,order,steps", [("euler", 1, (10, 20, 40)), ("heun", 2, (40, 80, 160))])
def test_convergence_order(noise, solver, order, steps):
    errors = [endpoint_error(noise, n, solver) for n in steps]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(rates, order, atol=0.2)


def test_trajectory_and_replacement():
    x0 = jax.random.normal(jax.random.key(1), (2, 5))
    pinned = jnp.arange(2.0)[:, None]
    replace = lambda x, t: x.at[:, :1].set(pinned)
    times = schedules.linear_quadratic(6, 12)
    x1, traj = ode.integrate(velocity_five, x0, times, "heun", replace_fn=replace, return_trajectory=True)
    assert traj.shape == (7, 2, 5)
    np.testing.assert_array_equal(traj[-1], x1)
    np.testing.assert_array_equal(traj[0, :, 1:], x0[:, 1:])
    np.testing.assert_array_equal(traj[:, :, 0], jnp.broadcast_to(pinned[:, 0], (7, 2)))
    # The untouched entries follow the plain ODE (the pinned column does not enter v here).
    free = ode.integrate(velocity_five, x0, times, "heun")
    np.testing.assert_allclose(x1[:, 1:], free[:, 1:], rtol=1e-6)


def velocity_five(x, t):
    return analytic.gaussian_velocity(x, t, 1.0, 0.3)


def test_bad_solver(noise):
    with pytest.raises(ValueError, match="solver"):
        ode.integrate(velocity, noise, schedules.linear(4), "rk4")
