"""Sampling time grids for the flow-matching ODE (t = 0 noise → t = 1 data).

STIV (paper §2.1) integrates the learned velocity from t = 0 to 1 but does not state the grid.
Two grids are offered:

- :func:`linear`: ``num_steps`` equal steps.
- :func:`linear_quadratic`: Movie Gen's linear-quadratic t-schedule (the same shape as
  ``linear_quadratic_schedule`` in Mochi's public pipeline). With S = ``num_steps`` and
  N = ``emulated_steps`` the first L = S//2 steps are *exactly* the first L steps of the N-step
  linear grid (step 1/N, so t_L = τ = L/N), and the remaining Q = S − L steps follow the quadratic

      t(i) = τ + (i − L)/N + a·(i − L)²,   a = (1 − τ·S/L) / Q²,

  which has the linear part's value and slope at i = L (a C¹ join) and reaches exactly 1 at i = S.
  Movie Gen reports that 50 such steps closely match a 250-step linear sample, the default here.
"""

from __future__ import annotations

import numpy as np

SCHEDULES = ("linear", "linear_quadratic")


def linear(num_steps: int) -> np.ndarray:
    """``num_steps + 1`` equally spaced times from 0.0 to 1.0 (float64)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return np.linspace(0.0, 1.0, num_steps + 1)


def linear_quadratic(num_steps: int = 50, emulated_steps: int = 250) -> np.ndarray:
    """Movie Gen linear-quadratic grid: ``num_steps + 1`` times rising from 0.0 to 1.0 (float64).

    The first ``num_steps // 2`` steps equal those of ``linear(emulated_steps)``; the rest are
    quadratic, C¹ at the join, ending exactly at 1.0 (module docstring has the formula).
    Requires ``2 <= num_steps <= emulated_steps`` (otherwise the quadratic would not be monotone).
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    if emulated_steps < num_steps:
        raise ValueError(
            f"emulated_steps ({emulated_steps}) must be >= num_steps ({num_steps}): the schedule "
            "emulates a finer linear grid"
        )
    num_linear = num_steps // 2
    num_quad = num_steps - num_linear
    tau = num_linear / emulated_steps
    curvature = (1.0 - tau * num_steps / num_linear) / num_quad**2
    i = np.arange(num_steps + 1, dtype=np.float64)
    lin = i / emulated_steps
    j = i - num_linear
    quad = tau + j / emulated_steps + curvature * j**2
    times = np.where(i < num_linear, lin, quad)
    times[-1] = 1.0  # exact in exact arithmetic; remove the rounding
    return times


def get(name: str, num_steps: int, emulated_steps: int = 250) -> np.ndarray:
    """Schedule by name (``linear`` or ``linear_quadratic``), for CLIs and configs."""
    if name == "linear":
        return linear(num_steps)
    if name == "linear_quadratic":
        return linear_quadratic(num_steps, emulated_steps)
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")
