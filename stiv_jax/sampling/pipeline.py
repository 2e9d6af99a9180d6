"""Sampling from a trained run: ``load_sampler(workdir) -> Sampler``, ``Sampler.generate(...)``.

The reusable core of ``stiv-sample`` (and of the notebooks and the demo)::

    sampler = load_sampler("outputs/demo/workdir")            # EMA weights of the last checkpoint
    video = sampler.generate(["a red circle moving left"], task="ti2v", image="first.png",
                             steps=50, guidance="jit", scale=7.5, seed=0)  # uint8 [B, T, H, W, 3]

Loading rebuilds everything from the workdir's ``config.json``: the DiT (EMA parameters by
default, ``ema=False`` for the raw ones), the T5 tokenizer (``data.tokenizer_path``), the frozen
text encoder and autoencoder through the trainer's :class:`Conditioner` (so prompts are encoded
exactly as in training) and the null (empty-prompt) text used by guidance. Defaults for the clip
length, resolution, frame stride and number of prediction frames come from the training config,
those of the sampler (steps, schedule, guidance) from its ``sampling`` section when set.

One ``generate`` call = per chunk of prompts: encode text → one jitted program (noise, encode the
given frames, the whole ODE ``lax.scan`` with guidance) → one jitted decode to ``uint8``, both
compiled ahead of time (``jit(...).lower(...).compile()``) and cached per shape/option set.
``Sampler.timings``: the seconds the last call spent in ``encode``, ``compile``, ``sample`` and
``decode`` (device work waited for), and with several processes in ``wait``, for the others to
finish compiling. The noise of chunk ``i`` comes from ``fold_in(key(seed), i)``: the same seed,
prompts and options give bit-identical frames.

Long videos (``task="long"``, paper §5): K keyframes (``long_keyframes``, default T) at stride
(T − 1)·s, then every consecutive pair is interpolated with a T-frame clip (first and last frames
given), so every model call sees the training clip length T. Output: (K − 1)·T frames (long.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from stiv_jax.data.latent_cache import null_text_for
from stiv_jax.encoders.build import resolve_text_config
from stiv_jax.encoders.conditioner import Conditioner, check_consistency
from stiv_jax.model.config import resolve as resolve_model
from stiv_jax.model.dit import STIV
from stiv_jax.parallel.distributed import compile_together, to_host
from stiv_jax.sampling import inputs, long, schedules, tasks
from stiv_jax.sampling.options import FLAGS, Pixels, SampleOptions, check_inputs
from stiv_jax.storage import checkpoints as checkpoint
from stiv_jax.storage import paths
from stiv_jax.storage.workdir import Workdir
from stiv_jax.text.tokenizer import T5Tokenizer, make_tokenizer


@dataclasses.dataclass(frozen=True)
class Plan:
    """Resolved, hashable (static) shape of one program: what the jitted sampler specialises on."""

    task: str
    num_frames: int  # clip length of every model call
    height: int
    width: int
    frame_stride: int
    num_given: int | None  # predict: k
    num_keyframes: int  # long: K (else 0)
    solver: str

    @property
    def output_frames(self) -> int:
        if self.task == "long":
            return long.num_long_frames(self.num_keyframes, self.num_frames)
        return self.num_frames

    @property
    def video_frames(self) -> int:
        """Frames the ``video`` input must provide (predict: k; upsample: ceil(T / 2))."""
        return {"predict": self.num_given or 0, "upsample": -(-self.num_frames // 2)}.get(self.task, 0)


def _sample_latents(model, ae_arg, key, cond, null_cond, times, given, guidance, noise, *, plan: Plan, ae_static):
    ae = ae_static if ae_arg is None else ae_arg
    if plan.task == "long":
        first = None if given is None else given[:, 0]
        return long.generate_long(
            model,
            ae,
            key,
            cond=cond,
            null_cond=null_cond,
            height=plan.height,
            width=plan.width,
            times=times,
            num_keyframes=plan.num_keyframes,
            segment_frames=plan.num_frames,
            small_stride=plan.frame_stride,
            first_image=first,
            guidance=guidance,
            solver=plan.solver,
        )[1]
    return tasks.generate(
        model,
        ae,
        key,
        task=plan.task,
        cond=cond,
        null_cond=null_cond,
        num_frames=plan.num_frames,
        height=plan.height,
        width=plan.width,
        times=times,
        images=given,
        num_given=plan.num_given,
        frame_stride=plan.frame_stride,
        guidance=guidance,
        solver=plan.solver,
        noise=noise,
    )[1]


def _decode_uint8(ae_arg, latents, *, ae_static):
    ae = ae_static if ae_arg is None else ae_arg
    return inputs.to_uint8(tasks.decode(ae, latents))


def default_geometry(config: ml_collections.ConfigDict, task: str) -> tuple[int, int, int]:
    """``(num_frames, height, width)`` the run was trained at (first fitting ``data.buckets``)."""
    d = config.data
    for t, h, w in (tuple(int(v) for v in b) for b in (d.get("buckets") or ())):
        if (t == 1) == (task == "t2i"):
            return t, h, w
    return (1 if task == "t2i" else int(d.num_frames)), int(d.resolution), int(d.resolution)


class Sampler:
    """A trained STIV ready to sample (see the module docstring); build it with :func:`load_sampler`."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        model: STIV,
        conditioner: Conditioner,
        frozen: dict,
        tokenizer: T5Tokenizer,
        *,
        step: int,
        ema: bool,
        log: Callable[[str], None] | None = None,
    ):
        self.config, self.model, self.conditioner = config, model, conditioner
        self.frozen, self.tokenizer, self.step, self.ema = frozen, tokenizer, step, ema
        self.log = log or (lambda msg: None)
        self.warn = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._encode_text = jax.jit(conditioner.encode_text)
        tokens, mask, pooled = conditioner.null_text(frozen, tokenizer.max_length)
        self.null_cond = dict(text=tokens, text_mask=mask, pooled_text=pooled)
        ae = conditioner.autoencoder
        self._ae_arg, self._ae_static = (ae, None) if isinstance(ae, nnx.Module) else (None, ae)
        self._compiled: dict[Any, Any] = {}
        self.timings: dict[str, float] = collections.defaultdict(float)

    @property
    def autoencoder(self):
        return self.conditioner.autoencoder

    def plan(self, options: SampleOptions) -> Plan:
        """Resolves ``options`` against the training config; raises ``ValueError`` on bad shapes."""
        options.validate()
        c, m = self.config, resolve_model(self.config.model)
        task = options.task
        t0, h0, w0 = default_geometry(c, task)
        if task == "t2i" and options.num_frames not in (None, 1):
            raise ValueError(f"t2i makes one frame; got num_frames={options.num_frames}")
        num_frames = options.num_frames or t0
        height, width = options.height or h0, options.width or w0
        pt, cell = m.temporal_patch_size, self.autoencoder.downsample * m.patch_size
        if num_frames != 1 and num_frames % pt:
            raise ValueError(f"num_frames={num_frames} must be 1 or a multiple of the model's temporal patch {pt}")
        if height % cell or width % cell:
            raise ValueError(
                f"height x width = {height}x{width} must be multiples of {cell} (autoencoder downsample x patch size)"
            )
        num_given, keyframes = None, 0
        if task == "predict":
            num_given = options.predict_frames or max(1, min(int(c.get("predict_frames", 4)), num_frames - 1))
        if task == "long":
            keyframes = options.long_keyframes or num_frames
            if keyframes < 2 or keyframes % pt or num_frames < 3:
                raise ValueError(
                    f"long needs long_keyframes >= 2 (a multiple of {pt}) and "
                    f"num_frames >= 3; got {keyframes} and {num_frames}"
                )
        tasks.given_frame_indices(task if task != "long" else "t2v", num_frames, num_given)
        stride = options.frame_stride or int(tuple(c.data.frame_strides)[0])
        return Plan(task, num_frames, height, width, stride, num_given, keyframes, options.solver)

    def warn_truncated(self, prompts: Sequence[str]) -> None:
        """Warns once per distinct prompt that has more tokens than the text length (it is cut)."""
        unique, limit = list(dict.fromkeys(prompts)), self.tokenizer.max_length
        for prompt, count in zip(unique, self.tokenizer.token_counts(unique)):
            if count > limit:
                words = prompt.split()
                head = " ".join(words[:6]) + (" …" if len(words) > 6 else "")
                self.warn(
                    f"warning: prompt {head!r} has {count} tokens (EOS included) but "
                    f"data.max_text_length is {limit}: the last {count - limit} are cut"
                )

    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, jax.Array]:
        """Token embeddings, mask and pooled embedding of ``prompts`` (the training encoder)."""
        ids, mask = self.tokenizer(list(prompts))
        tokens, pooled = self._encode_text(self.frozen, jnp.asarray(ids), jnp.asarray(mask))
        return dict(
            text=tokens.astype(jnp.float32), text_mask=jnp.asarray(mask), pooled_text=pooled.astype(jnp.float32)
        )

    def given_frames(
        self,
        plan: Plan,
        *,
        image: Pixels = None,
        last_image: Pixels = None,
        video: Pixels = None,
        video_stride: int = 1,
    ) -> np.ndarray | None:
        """Conditioning frames as float32 ``[1 or B, G, H, W, 3]`` in [-1, 1] (None for none)."""
        h, w = plan.height, plan.width
        if plan.task in ("predict", "upsample"):
            n = plan.video_frames
            if isinstance(video, str):
                video = inputs.load_video(video, n, h, w, stride=video_stride)
            frames = inputs.as_model_pixels(video, h, w, "video", ndim=4)
            if frames.shape[1] < n:
                raise ValueError(
                    f"video has {frames.shape[1]} frames; task {plan.task!r} with "
                    f"num_frames={plan.num_frames} needs {n}"
                )
            return frames[:, :n]
        pixels = []
        for name, value in (("image", image), ("last_image", last_image)):
            if value is not None:
                if isinstance(value, str):
                    value = inputs.load_image(value, h, w, flag=FLAGS[name])
                pixels.append(inputs.as_model_pixels(value, h, w, name, ndim=3)[:, 0])
        if not pixels:
            return None
        batch = max(p.shape[0] for p in pixels)
        return np.stack([np.broadcast_to(p, (batch, *p.shape[1:])) for p in pixels], axis=1)

    def latent_shape(self, plan: Plan, batch: int) -> tuple[int, ...]:
        """``[B, T, h, w, C]``: the shape of the initial noise of ``batch`` clips under ``plan``."""
        return tasks.latent_shape(self.autoencoder, batch, plan.num_frames, plan.height, plan.width)

    def check_noise(self, noise: np.ndarray | jax.Array, plan: Plan, batch: int) -> np.ndarray:
        """``noise`` as float32 numpy after checking its shape against the plan (``ValueError``)."""
        if plan.task == "long":
            raise ValueError("noise= is not supported for task 'long' (it draws noise per segment)")
        noise = np.asarray(noise, np.float32)
        want = self.latent_shape(plan, batch)
        if noise.shape != want:
            raise ValueError(f"noise has shape {noise.shape}; {batch} prompt(s) under these options need {want}")
        return noise

    def _program(self, name: str, fn: Callable, args: tuple, **static) -> Callable:
        leaves = jax.tree.leaves(args)
        key = (
            name,
            tuple(static.items()),
            jax.tree.structure(args),
            tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in leaves),
        )
        if key not in self._compiled:
            start = time.perf_counter()
            lowered = jax.jit(functools.partial(fn, **static)).lower(*args)
            lowering = time.perf_counter() - start
            self._compiled[key], compiling = compile_together(lowered, name)
            self.timings["compile"] += lowering + compiling
            if jax.process_count() > 1:  # the wait for the other processes to compile it
                self.timings["wait"] += time.perf_counter() - start - lowering - compiling
        return self._compiled[key]

    def _timed(self, stage: str, fn: Callable, *args):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        self.timings[stage] += time.perf_counter() - start
        return out

    def generate(
        self,
        prompts: str | Sequence[str],
        options: SampleOptions | None = None,
        *,
        image: Pixels = None,
        last_image: Pixels = None,
        video: Pixels = None,
        noise: np.ndarray | jax.Array | None = None,
        **overrides: Any,
    ) -> np.ndarray:
        """Samples one clip per prompt; returns ``uint8 [B, T, H, W, 3]``.

        ``options`` (default: the run's, :meth:`SampleOptions.for_run`) or keyword ``overrides`` of
        its fields set the task and sampler; ``image``, ``last_image`` (``[H, W, 3]`` or
        ``[B, H, W, 3]``) and ``video`` (``[T, H, W, 3]`` or ``[B, T, H, W, 3]``) are file paths,
        uint8 pixels (fitted to the size) or float32 pixels in [-1, 1] (exact size); one of them
        for all prompts or one per prompt. ``noise``: the initial latents (t = 0), float32
        ``[B, T, h, w, C]`` for the B prompts (:meth:`latent_shape`), instead of drawing them from
        the seed (to reproduce a video elsewhere, e.g. with the exported PyTorch pipeline).
        """
        options = dataclasses.replace(options or SampleOptions.for_run(self.config), **overrides)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        check_inputs(options.task, image=image, last_image=last_image, video=video)
        plan = self.plan(options)
        self.warn_truncated(prompts)
        given = self.given_frames(
            plan, image=image, last_image=last_image, video=video, video_stride=options.video_stride
        )
        if given is not None and given.shape[0] not in (1, len(prompts)):
            raise ValueError(f"{given.shape[0]} conditioning images/videos for {len(prompts)} prompts")
        if noise is not None:
            noise = self.check_noise(noise, plan, len(prompts))
        times = jnp.asarray(schedules.get(options.schedule, options.steps, options.emulated_steps), jnp.float32)
        guidance = options.run_guidance(self.config, self.autoencoder)
        self.timings = collections.defaultdict(float)
        self.log(
            f"sampling task={plan.task} prompts={len(prompts)} frames={plan.output_frames} "
            f"size={plan.height}x{plan.width} steps={options.steps} ({options.schedule}, {options.solver}) "
            f"guidance={options.guidance} scale={options.scale} high_scale={options.high_scale} seed={options.seed}"
        )
        chunk = options.batch_size or len(prompts)
        videos = []
        for i, start in enumerate(range(0, len(prompts), chunk)):
            # A short last chunk is padded (last prompt repeated) to reuse the compiled program.
            rows = np.minimum(np.arange(start, start + chunk), len(prompts) - 1)
            cond = self._timed("encode", self.encode_prompts, [prompts[r] for r in rows])
            chunk_given = None
            if given is not None:
                chunk_given = jnp.asarray(given[np.zeros_like(rows) if given.shape[0] == 1 else rows])
            key = jax.random.fold_in(jax.random.key(options.seed), i)
            chunk_noise = None if noise is None else jnp.asarray(noise[rows])
            args = (self.model, self._ae_arg, key, cond, self.null_cond, times, chunk_given, guidance, chunk_noise)
            run = self._program("sample", _sample_latents, args, plan=plan, ae_static=self._ae_static)
            latents = self._timed("sample", run, *args)
            decode = self._program("decode", _decode_uint8, (self._ae_arg, latents), ae_static=self._ae_static)
            video = to_host(self._timed("decode", decode, self._ae_arg, latents))
            videos.append(video[: len(prompts) - start])
        self.log("timings: " + " ".join(f"{k}={v:.2f}s" for k, v in self.timings.items()))
        return np.concatenate(videos)


def load_sampler(
    workdir: str,
    ema: bool = True,
    *,
    step: int | None = None,
    tokenizer_path: str | None = None,
    text_checkpoint: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Sampler:
    """Rebuilds a trained run's sampler from ``workdir`` (latest checkpoint unless ``step``)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    wd = Workdir(workdir)
    if not wd.exists():
        raise FileNotFoundError(f"workdir {workdir!r} does not exist")
    start = time.perf_counter()
    config = wd.load_config()
    tokenizer_kind = config.data.get("tokenizer", "t5")  # runs saved before data.tokenizer: T5
    tokenizer_path = tokenizer_path or config.data.get("tokenizer_path", "")
    if not tokenizer_path and tokenizer_kind == "t5":  # 'clip' without a path: the packaged vocabulary
        raise ValueError(f"{workdir}/config.json has no data.tokenizer_path; pass --tokenizer_path")
    if tokenizer_path and not paths.exists(tokenizer_path):
        raise FileNotFoundError(f"tokenizer {tokenizer_path!r} (data.tokenizer_path) not found; pass --tokenizer_path")
    tokenizer = make_tokenizer(tokenizer_kind, tokenizer_path, max_length=config.data.max_text_length)
    source_config = config
    config = resolve_text_config(config, text_checkpoint)
    if config.text.kind == "embedding" and tokenizer.vocab_size > config.text.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_path} has {tokenizer.vocab_size} pieces but "
            f"config.text.vocab_size is {config.text.vocab_size}"
        )
    params, step = checkpoint.restore_params(wd, ema=ema, step=step)  # names the available steps on failure
    conditioner = Conditioner(config, with_autoencoder=True)
    check_consistency(config, conditioner)  # names the key when e.g. --text_encoder's width is off
    null_text = None
    if source_config.text.kind == "cached":  # the empty-prompt encoding the run was trained with,
        with contextlib.suppress(FileNotFoundError):  # when still available
            null_text = null_text_for(source_config)
    frozen = conditioner.frozen_params(null_text)

    graphdef, _ = nnx.split(jax.eval_shape(lambda: STIV(config.model, rngs=nnx.Rngs(0))), nnx.Param)
    model = nnx.merge(graphdef, params)
    log(f"loaded {workdir} step {step} ({'EMA' if ema else 'raw'} weights) in {time.perf_counter() - start:.2f}s")
    return Sampler(config, model, conditioner, frozen, tokenizer, step=step, ema=ema, log=log)
