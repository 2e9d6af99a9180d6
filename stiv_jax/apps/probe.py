"""What does a trained model condition on? Two probes of its velocity field (§2.1).

- :func:`word_sensitivity`: how much the predicted velocity changes when one prompt is swapped
  for another (relative L2 over a batch of noise inputs), e.g. "a red circle moving right" →
  "… moving left". A word the model ignores changes it by ~0.
- :func:`time_reversal_asymmetry`: ``‖v(x) − R v(R x)‖ / ‖v(x)‖`` with ``R`` reversing the frames.
  Factorised attention sees frame order only through temporal attention's 1D RoPE (relative
  offsets). On pure-noise inputs the velocity is mostly the noise estimate, which reversal leaves
  alone, so a small value there does not by itself mean the model is order-blind.
- :func:`caption_loss_gain`: the decisive one. The flow-matching loss on real training clips with
  each caption edited (one word swapped) minus the loss with the true caption, per flow time. A
  word the model uses costs loss when it is wrong; a word it ignores costs ≈ 0.

Run on a workdir: ``python -m stiv_jax.apps.probe --workdir=outputs/demo/workdir``.
"""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from stiv_jax.flow.interpolant import interpolate, velocity_target
from stiv_jax.flow.tasks import replace_frames

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (latest checkpoint, EMA weights).")
_BASE = flags.DEFINE_string("prompt", "a red circle moving right", "The reference prompt.")
_VARIANTS = flags.DEFINE_list(
    "variants",
    [
        "a blue circle moving right",
        "a red square moving right",
        "a red circle moving left",
        "a red circle moving up",
        "a red circle standing still",
    ],
    "Prompts compared with --prompt.",
)
_T = flags.DEFINE_float("t", 0.3, "Flow time of the noise probe inputs (0 = noise, 1 = data).")
_CLIPS = flags.DEFINE_integer("clips", 32, "Training clips for the caption-edit probe.")
_TIMES = flags.DEFINE_list("times", ["0.1", "0.3", "0.5", "0.7"], "Flow times of the caption-edit probe.")


def _relative(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


def time_reversal_asymmetry(model, x: jax.Array, t: jax.Array, cond: Mapping[str, jax.Array]) -> float:
    """``‖v(x) − R v(R x)‖ / ‖v(x)‖`` for latents ``x [B, T, H, W, C]`` (``cond``: the model's
    keyword inputs, frame-independent)."""
    chex.assert_rank(x, 5)
    v = model(x, t, **cond)
    return _relative(v, model(x[:, ::-1], t, **cond)[:, ::-1])


def word_sensitivity(
    model, encode, x: jax.Array, t: jax.Array, micro: jax.Array, base: str, variants: list[str]
) -> dict[str, float]:
    """``{variant: ‖v(x | variant) − v(x | base)‖ / ‖v(x | base)‖}``; ``encode(prompts)`` returns
    the model's ``text``/``text_mask``/``pooled_text`` inputs (``Sampler.encode_prompts``)."""
    chex.assert_rank(x, 5)
    velocity = lambda prompt: model(x, t, **encode([prompt] * x.shape[0]), micro=micro)
    ref = velocity(base)
    return {v: _relative(ref, velocity(v)) for v in variants}


def _clip_losses(v: jax.Array, target: jax.Array, frames: jax.Array) -> np.ndarray:
    """Per-clip mean squared velocity error over the frames ``frames`` marks (1 = in the loss)."""
    err = jnp.square(v - target) * frames
    return np.asarray(err.sum(axis=(1, 2, 3, 4)) / (frames.sum(axis=(1, 2, 3, 4)) * np.prod(v.shape[2:])))


def caption_loss_gain(
    model,
    encode,
    x1: jax.Array,
    micro: jax.Array,
    captions: list[str],
    edits: Mapping[str, list[str]],
    times: tuple[float, ...],
    key: jax.Array,
    cond_mask: jax.Array | None = None,
) -> dict[str, list[float]]:
    """``{edit: [mean loss(edited caption) − loss(caption) for t in times]}`` over clips ``x1``.

    ``edits[name][i]`` replaces ``captions[i]``; rows it leaves unchanged are not averaged.
    ``cond_mask [B, T]`` (True = frame replaced by its clean latent, e.g. TI2V's first frame)
    is passed to the model and left out of the loss, as in training (§2.3.1).
    """
    chex.assert_rank(x1, 5)
    b, f = x1.shape[:2]
    cond = jnp.zeros((b, f), bool) if cond_mask is None else cond_mask
    chex.assert_shape(cond, (b, f))
    gains: dict[str, list[float]] = {name: [] for name in edits}
    for i, time in enumerate(times):
        noise = jax.random.normal(jax.random.fold_in(key, i), x1.shape, x1.dtype)
        t = jnp.full((b,), time)
        x_t = replace_frames(interpolate(x1, noise, t), x1, cond)
        target, frames = velocity_target(x1, noise), (~cond).astype(jnp.float32)[:, :, None, None, None]
        per_clip = lambda prompts, x_t=x_t, t=t, target=target, frames=frames: _clip_losses(
            model(x_t, t, **encode(prompts), micro=micro, cond_mask=cond), target, frames
        )  # as in training
        base = per_clip(captions)
        for name, edited in edits.items():
            changed = np.array([a != c for a, c in zip(edited, captions)])
            gains[name].append(float((per_clip(edited) - base)[changed].mean()) if changed.any() else 0.0)
    return gains


def demo_caption_edits(captions: list[str]) -> dict[str, list[str]]:
    """Demo captions with one word swapped: the next colour / shape, the opposite direction, the
    other axis (left↔up, right↔down), and "standing still" (moving clips only)."""
    from stiv_jax.apps.report import parse_caption
    from stiv_jax.data.synthetic import COLORS, SHAPES, caption_for

    colors = tuple(COLORS)
    parsed = [parse_caption(c) for c in captions]
    nxt = lambda seq, v: seq[(seq.index(v) + 1) % len(seq)]
    swap = {"left": "right", "right": "left", "up": "down", "down": "up"}
    axis = {"left": "up", "up": "left", "right": "down", "down": "right"}
    edit = lambda f: [caption_for(*f(p["color"], p["shape"], p["motion"])) for p in parsed]
    keep_still = lambda table: lambda c, s, m: (c, s, table.get(m, m))
    return {
        "colour": edit(lambda c, s, m: (nxt(colors, c), s, m)),
        "shape": edit(lambda c, s, m: (c, nxt(SHAPES, s), m)),
        "direction reversed": edit(keep_still(swap)),
        "other axis": edit(keep_still(axis)),
        "standing still": edit(lambda c, s, m: (c, s, "still")),
    }


def main(argv) -> None:
    del argv
    import sentencepiece as spm

    from stiv_jax.sampling.pipeline import load_sampler
    from stiv_jax.sampling.tasks import default_micro
    from stiv_jax.train.data import make_iterator

    s = load_sampler(_WORKDIR.value)
    c = s.config
    f, ds = c.data.num_frames, c.autoencoder.downsample
    size = c.data.resolution // ds
    x = jax.random.normal(jax.random.key(0), (16, f, size, size, c.model.in_channels))
    t = jnp.full((16,), _T.value)
    micro = default_micro(16, c.data.resolution, c.data.resolution, f, c.data.frame_strides[0])

    print(f"velocity change vs {_BASE.value!r} at t={_T.value} (16 noise inputs):")
    for prompt, change in word_sensitivity(
        s.model, s.encode_prompts, x, t, micro, _BASE.value, _VARIANTS.value
    ).items():
        print(f"  {prompt:34s} {change:.3f}")
    asym = time_reversal_asymmetry(s.model, x, t, dict(s.encode_prompts([_BASE.value] * 16), micro=micro))
    print(f"time-reversal asymmetry: {asym:.3f}")

    # The training clips themselves (the run's data config, read from the current directory).
    sp = spm.SentencePieceProcessor(model_file=c.data.tokenizer_path)
    batch = next(make_iterator(c, _CLIPS.value))
    captions = [
        sp.decode([int(i) for i, m in zip(ids, mask) if m and i > 1])
        for ids, mask in zip(batch["text_ids"], batch["text_mask"])
    ]
    x1, micro = jnp.asarray(batch["latents"]), jnp.asarray(batch["micro"])
    edits = demo_caption_edits(captions)
    times = tuple(float(v) for v in _TIMES.value)
    first = jnp.zeros(x1.shape[:2], bool).at[:, 0].set(True)
    for task, cond in (("t2v", None), ("ti2v", first)):
        gains = caption_loss_gain(s.model, s.encode_prompts, x1, micro, captions, edits, times, jax.random.key(1), cond)
        print(
            f"{task}: loss increase with one caption word wrong ({len(captions)} training clips), at t = {', '.join(map(str, times))}:"
        )
        for name, row in gains.items():
            print(f"  {name:20s} " + " ".join(f"{g:+.4f}" for g in row))


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
