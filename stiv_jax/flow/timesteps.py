"""Training-time distributions of the flow time t ∈ (0, 1) (paper: unstated; docs/design.md).

- ``logit_normal`` (default; Movie Gen / SD3): ``t = sigmoid(m + s·n)``, n ~ N(0, 1).
- ``uniform``: t ~ U(0, 1).

Optional resolution shift (SD3 §5.3.2, in our t = data convention): with ``shift = α > 1`` the
noise level σ = 1 − t is mapped to ``α·σ / (1 + (α − 1)·σ)``, spending more steps at high noise
for larger (more redundant) inputs. ``shift = 1`` is the identity.
"""

from __future__ import annotations

import jax


def shift_time(t: jax.Array, shift: float) -> jax.Array:
    sigma = 1.0 - t
    return 1.0 - shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_time(
    key: jax.Array, batch: int, kind: str = "logit_normal", mean: float = 0.0, std: float = 1.0, shift: float = 1.0
) -> jax.Array:
    """``[batch]`` float32 times in (0, 1)."""
    if kind == "logit_normal":
        t = jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,)))
    elif kind == "uniform":
        t = jax.random.uniform(key, (batch,))
    else:
        raise ValueError(f"unknown time distribution {kind!r}; use 'logit_normal' or 'uniform'")
    return shift_time(t, shift) if shift != 1.0 else t
