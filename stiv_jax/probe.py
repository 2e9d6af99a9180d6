"""What does a trained model condition on? Two probes of its velocity field (§2.1).

- :func:`word_sensitivity`: how much the predicted velocity changes when one prompt is swapped
  for another (relative L2 over a batch of noise inputs), e.g. "a red circle moving right" →
  "… moving left". A word the model ignores changes it by ~0.
- :func:`time_reversal_asymmetry`: ``‖v(x) − R v(R x)‖ / ‖v(x)‖`` with ``R`` reversing the frames.
  Factorised attention sees frame order only through temporal attention's 1D RoPE; a model with
  asymmetry ≈ 0 cannot tell a motion from its reverse (left from right).

Run on a workdir: ``python -m stiv_jax.probe --workdir=outputs/demo/workdir``.
"""

from __future__ import annotations

from typing import Mapping

import chex
import jax
import jax.numpy as jnp
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (latest checkpoint, EMA weights).")
_BASE = flags.DEFINE_string("prompt", "a red circle moving right", "The reference prompt.")
_VARIANTS = flags.DEFINE_list("variants", ["a blue circle moving right", "a red square moving right",
                                           "a red circle moving left", "a red circle moving up",
                                           "a red circle standing still"], "Prompts compared with --prompt.")
_T = flags.DEFINE_float("t", 0.3, "Flow time of the probe inputs (0 = noise, 1 = data).")


def _relative(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


def time_reversal_asymmetry(model, x: jax.Array, t: jax.Array, cond: Mapping[str, jax.Array]) -> float:
    """``‖v(x) − R v(R x)‖ / ‖v(x)‖`` for latents ``x [B, T, H, W, C]`` (``cond``: the model's
    keyword inputs, frame-independent)."""
    chex.assert_rank(x, 5)
    v = model(x, t, **cond)
    return _relative(v, model(x[:, ::-1], t, **cond)[:, ::-1])


def word_sensitivity(model, encode, x: jax.Array, t: jax.Array, micro: jax.Array, base: str,
                     variants: list[str]) -> dict[str, float]:
    """``{variant: ‖v(x | variant) − v(x | base)‖ / ‖v(x | base)‖}``; ``encode(prompts)`` returns
    the model's ``text``/``text_mask``/``pooled_text`` inputs (``Sampler.encode_prompts``)."""
    chex.assert_rank(x, 5)
    velocity = lambda prompt: model(x, t, **encode([prompt] * x.shape[0]), micro=micro)
    ref = velocity(base)
    return {v: _relative(ref, velocity(v)) for v in variants}


def main(argv) -> None:
    del argv
    from stiv_jax.sampling.pipeline import load_sampler
    from stiv_jax.sampling.tasks import default_micro

    s = load_sampler(_WORKDIR.value)
    c = s.config
    f, ds = c.data.num_frames, c.autoencoder.downsample
    size = c.data.resolution // ds
    x = jax.random.normal(jax.random.key(0), (16, f, size, size, c.model.in_channels))
    t = jnp.full((16,), _T.value)
    micro = default_micro(16, c.data.resolution, c.data.resolution, f, c.data.frame_strides[0])

    print(f"velocity change vs {_BASE.value!r} at t={_T.value} (16 noise inputs):")
    for prompt, change in word_sensitivity(s.model, s.encode_prompts, x, t, micro, _BASE.value, _VARIANTS.value).items():
        print(f"  {prompt:34s} {change:.3f}")
    asym = time_reversal_asymmetry(s.model, x, t, dict(s.encode_prompts([_BASE.value] * 16), micro=micro))
    print(f"time-reversal asymmetry: {asym:.3f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
