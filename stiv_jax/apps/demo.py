"""``make demo``: the whole STIV pipeline on the embedded moving-shapes data, CPU only.

  python -m stiv_jax.apps.demo [--out=outputs/demo] [--config=experiments/demo_shapes.py] [--steps=N]

1. render the demo dataset (real H.264 mp4s + captions + a SentencePiece tokenizer);
2. write ArrayRecord shards and the latent cache (pixel autoencoder);
3. train ``experiments/demo_shapes.py`` (T2V + TI2V by frame replacement) in ``OUT/workdir``;
4. sample with the config's ``sampling`` settings (JIT-CFG s = 2, frequency-decoupled: 0.5 on the
   high frequencies; linear-quadratic schedule): T2V videos from prompts and a TI2V video from a
   rendered first frame, as mp4 + gif, a contact sheet and the loss curve;
5. measure what each video shows (stiv_jax/apps/report.py) against its prompt.

Each stage is skipped when its output exists, so a second run only samples again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
from absl import app, flags

from stiv_jax.apps.demo_setup import T2V_PROMPTS, TI2V, VIEW_SCALE, encode_latents, load_config
from stiv_jax.storage.workdir import Workdir

_OUT = flags.DEFINE_string("out", "outputs/demo", "Output folder.")
_CONFIG = flags.DEFINE_string("config", "experiments/demo_shapes.py", "Demo training config file.")
_STEPS = flags.DEFINE_integer("steps", None, "Override config.num_train_steps.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def _stage(name: str):
    print(f"\n=== {name}", flush=True)
    return time.perf_counter()


def prepare_data(out: str, config) -> None:
    from stiv_jax.data.ingest import make_shards
    from stiv_jax.data.synthetic import make_demo_data

    data, shards, latents = (os.path.join(out, d) for d in ("data", "shards", "latents"))
    if not os.path.exists(os.path.join(data, "captions.jsonl")):
        t = _stage("1/4 rendering the moving-shapes dataset")
        make_demo_data(data)
        print(f"wrote {data} in {time.perf_counter() - t:.1f}s")
    if not os.path.exists(os.path.join(shards, "manifest.json")):
        _stage("2/4 writing shards and the latent cache")
        manifest = make_shards(data, shards, f"{data}/captions.jsonl")
        print(f"written={manifest['num_records']} skipped={manifest['num_skipped']}")
    encode_latents(shards, latents, config)


def sample_and_report(out: str, workdir: str, config, seed: int) -> dict:
    from stiv_jax.apps import report as demo_report
    from stiv_jax.data import video_io
    from stiv_jax.data.synthetic import FPS, caption_for
    from stiv_jax.sampling.options import SampleOptions
    from stiv_jax.sampling.pipeline import load_sampler

    o = SampleOptions.for_run(config)  # the config's sampling section (experiments/demo_shapes.py)
    high = "" if o.high_scale is None else f" (high frequencies {o.high_scale}, σ = {o.split_sigma:g} px)"
    t0 = _stage(
        f"4/4 sampling ({o.guidance.upper()}-CFG {o.scale}{high}, {o.schedule.replace('_', '-')} schedule, "
        f"{o.steps} steps)"
    )
    sampler = load_sampler(workdir)
    stride = config.data.frame_strides[0]
    t2v = sampler.generate(list(T2V_PROMPTS), o, task="t2v", seed=seed)
    color, shape, motion = TI2V
    ti2v_prompt = caption_for(color, shape, motion)
    # The conditioning frame: frame 0 of a clip rendered like the training data (64 px, downsized).
    first = demo_report.first_frames([ti2v_prompt])[0]
    ti2v = sampler.generate([ti2v_prompt], o, task="ti2v", image=first, seed=seed)

    videos, labels, rows = [], [], []
    for name, prompt, video in [*(("t2v", p, v) for p, v in zip(T2V_PROMPTS, t2v)), ("ti2v", ti2v_prompt, ti2v[0])]:
        stem = os.path.join(out, f"{name}_{prompt.replace(' ', '_')}")
        big = np.asarray(video).repeat(VIEW_SCALE, axis=1).repeat(VIEW_SCALE, axis=2)  # 24 px is tiny on screen
        for ext in (".mp4", ".gif"):
            video_io.write_video(stem + ext, big, fps=FPS / stride)  # the source clips' speed
        seen, want = demo_report.describe(np.asarray(video)), demo_report.parse_caption(prompt)
        rows.append(
            dict(task=name, prompt=prompt, seen=seen, ok={k: seen[k] == want[k] for k in want}, file=stem + ".mp4")
        )
        videos.append(np.asarray(video))
        labels.append(f"{name}: {prompt}   (seen: {seen['color']} {seen['shape']} {seen['motion']})")
    from PIL import Image

    Image.fromarray(first).save(os.path.join(out, "ti2v_first_frame.png"))
    sheet = demo_report.contact_sheet(videos, labels, os.path.join(out, "contact_sheet.png"))
    curve = demo_report.loss_curve(
        Workdir(workdir).metrics(), os.path.join(out, "loss_curve.png"), title=os.path.basename(workdir)
    )
    score = {k: float(np.mean([row["ok"][k] for row in rows])) for k in ("color", "shape", "motion")}
    # The five videos above are anecdotes; every one of the 60 demo captions is a measurement.
    t2v_samples: list[np.ndarray] = []  # kept for FVD

    def t2v_every(prompts: list[str]) -> np.ndarray:
        out = sampler.generate(prompts, o, task="t2v", seed=seed + 1)
        t2v_samples.extend(out)
        return out

    every = demo_report.prompt_following(t2v_every)
    ti2v_every = demo_report.prompt_following(  # does the given shape move the asked way?
        lambda prompts: sampler.generate(
            prompts, o, task="ti2v", image=demo_report.first_frames(prompts), seed=seed + 2
        ),
        demo_report.all_prompts(moving_only=True),
    )
    _stage("FVD: the trained model, real vs real (floor), the untrained model (ceiling)")
    from stiv_jax.apps import quality

    fvd = quality.fvd_report(
        sampler, np.stack(t2v_samples), demo_report.all_prompts(), dataclasses.replace(o, task="t2v", seed=seed + 1)
    )
    print(" ".join(f"fvd_{k}={v:.1f}" for k, v in fvd["fvd"].items()), flush=True)
    pytorch = _pytorch_check(sampler, workdir, os.path.join(out, "diffusers"), o, ti2v_prompt, first, seed)
    report = dict(
        fvd=fvd,
        pytorch=pytorch,
        rows=rows,
        prompt_following=score,
        t2v_all_prompts=every,
        ti2v_moving_prompts=ti2v_every,
        sheet=sheet,
        loss_curve=curve,
        timings=sampler.timings,
        seconds=time.perf_counter() - t0,
    )
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def _pytorch_check(sampler, workdir: str, folder: str, options, prompt: str, image, seed: int) -> dict:
    """The run as a diffusers folder and its T2V/TI2V videos drawn in PyTorch (apps/pytorch.py),
    when torch and diffusers are installed (``make test`` installs them; ``make demo`` does not)."""
    import importlib.util

    missing = [m for m in ("torch", "diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"PyTorch export check skipped: {', '.join(missing)} not installed (pip install -e '.[torch]')")
        return {"skipped": f"not installed: {', '.join(missing)}"}
    _stage("PyTorch: the run as a diffusers pipeline, the same noise drawn by STIVPipeline")
    from stiv_jax.apps.pytorch import pytorch_parity

    result = pytorch_parity(sampler, workdir, folder, options, prompt, image, seed)
    db = lambda v: "identical frames" if v >= 200 else f"{v:.1f} dB"  # 200 dB: apps/report.psnr's cap
    print(f"PSNR PyTorch vs JAX: t2v {db(result['t2v_psnr_db'])}, ti2v {db(result['ti2v_psnr_db'])} ({folder})")
    return result


def main(argv) -> None:
    del argv
    from stiv_jax.console.errors import quiet_libraries, verbose_from_env

    quiet_libraries(verbose_from_env())  # orbax logs dozens of INFO lines per checkpoint
    start = time.perf_counter()
    out = _OUT.value
    os.makedirs(out, exist_ok=True)
    config = load_config(_CONFIG.value, out, _STEPS.value)
    prepare_data(out, config)
    workdir = os.path.join(out, "workdir")
    from stiv_jax.storage.checkpoints import latest_step

    done = Workdir(workdir).checkpoints.exists() and latest_step(workdir) == config.num_train_steps
    if not done:
        t = _stage(f"3/4 training {_CONFIG.value} for {config.num_train_steps} steps in {workdir}")
        from stiv_jax.train.loop import train

        final = train(config, workdir)
        if "stopped_at" in final:  # SIGTERM/SIGINT: checkpoint saved; `make demo` again resumes
            print(f"training interrupted at step {final['stopped_at']}; run the demo again to resume")
            return
        print(f"trained in {time.perf_counter() - t:.0f}s, final loss {final.get('loss', float('nan')):.4f}")
    report = sample_and_report(out, workdir, config, _SEED.value)
    print("\nprompt → what the video shows (colour / shape / motion):")
    for row in report["rows"]:
        s = row["seen"]
        marks = "".join("✓" if row["ok"][k] else "✗" for k in ("color", "shape", "motion"))
        print(f"  {row['task']:5s} {row['prompt']:32s} → {s['color']} {s['shape']} {s['motion']}  [{marks}]")
    for name, key in (
        ("T2V on all {} demo captions", "t2v_all_prompts"),
        ("TI2V on the {} moving demo captions", "ti2v_moving_prompts"),
    ):
        every = report[key]
        print(
            name.format(every["prompts"])
            + " (accuracy, chance in brackets): "
            + ", ".join(f"{k} {v:.0%} ({every['chance'][k]:.0%})" for k, v in every["accuracy"].items())
        )
    print(f"\nvideos (mp4 + gif): {out}/t2v_*.mp4, {out}/ti2v_*.mp4")
    print(f"contact sheet:      {report['sheet']}")
    print(f"loss curve:         {report['loss_curve']}")
    print(
        f"checkpoint:         {workdir}  (stiv-sample --workdir={workdir} --prompt='a red circle moving left' --out=clip.mp4)"
    )
    print(f"total time:         {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    app.run(main)
