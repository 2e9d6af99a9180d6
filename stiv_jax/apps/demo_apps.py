"""``make demo-apps``: the paper's applications (§5, App. J) trained and measured on the demo.

  python -m stiv_jax.apps.demo_apps [--demo=outputs/demo] [--out=outputs/demo-apps] [--tup_steps=N]

Runs after ``make demo`` and reuses its shards and its trained T2V run (``DEMO/workdir``):

* **tup** — the temporal upsampler (experiments/demo_tup.py): its latent cache (7 frames at stride
  2), fine-tuning from the demo model, then apps/upsampling.py's measurements (inserted frames vs
  the true renders, with the repeat and cross-fade baselines; the T2V → TUP cascade), a contact
  sheet and GIFs (4 → 7 frames).

Writes ``OUT/report.json`` (``{"tup": {"metric", "value", "baseline", "higher_is_better", …}}``).
Each stage is skipped when its output exists.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags

from stiv_jax.apps.demo_setup import T2V_PROMPTS, VIEW_SCALE, encode_latents, load_config
from stiv_jax.errors import ConfigError
from stiv_jax.storage.workdir import Workdir

_DEMO = flags.DEFINE_string("demo", "outputs/demo", "The `make demo` output folder (its shards and workdir).")
_OUT = flags.DEFINE_string("out", "outputs/demo-apps", "Output folder.")
_TUP_STEPS = flags.DEFINE_integer("tup_steps", None, "Override the upsampler's num_train_steps.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")

TUP_CONFIG = "experiments/demo_tup.py"


def _train(config, workdir: str, name: str) -> None:
    from stiv_jax.storage.checkpoints import latest_step
    from stiv_jax.train.loop import train

    if Workdir(workdir).checkpoints.exists() and latest_step(workdir) == config.num_train_steps:
        return
    start = time.perf_counter()
    print(f"\n=== training {name} for {config.num_train_steps} steps in {workdir}", flush=True)
    final = train(config, workdir)
    if "stopped_at" in final:
        raise SystemExit(f"training interrupted at step {final['stopped_at']}; run again to resume")
    print(f"trained in {time.perf_counter() - start:.0f}s, final loss {final.get('loss', float('nan')):.4f}")


def _write_clips(folder: str, name: str, videos: dict[str, np.ndarray], fps: float) -> list[str]:
    from stiv_jax.data import video_io

    paths = []
    for prompt, video in videos.items():
        path = os.path.join(folder, f"{name}_{prompt.replace(' ', '_')}.gif")
        video_io.write_video(path, np.asarray(video).repeat(VIEW_SCALE, 1).repeat(VIEW_SCALE, 2), fps=fps)
        paths.append(path)
    return paths


def tup(demo: str, out: str, steps: int | None, seed: int) -> dict:
    """Trains, samples and measures the temporal upsampler; returns its report entry."""
    from stiv_jax.apps import report as demo_report
    from stiv_jax.apps import upsampling
    from stiv_jax.data.synthetic import FPS
    from stiv_jax.sampling import cascade
    from stiv_jax.sampling.options import SampleOptions
    from stiv_jax.sampling.pipeline import load_sampler

    config = load_config(TUP_CONFIG, demo, steps)
    config.data.path = os.path.join(out, "latents_tup")
    config.init_from.spatial = config.init_from.temporal = os.path.join(demo, "workdir")
    encode_latents(os.path.join(demo, "shards"), config.data.path, config)
    workdir = os.path.join(out, "tup")
    _train(config, workdir, TUP_CONFIG)

    print("\n=== tup: inserted frames vs the true renders; the T2V → TUP cascade", flush=True)
    upsampler, t2v = load_sampler(workdir), load_sampler(os.path.join(demo, "workdir"))
    prompts = demo_report.all_prompts()
    inbetween = upsampling.inbetween_report(upsampler, prompts, seed=seed)
    o = SampleOptions.for_run(t2v.config, task="t2v", seed=seed, batch_size=20)
    low = t2v.generate(prompts, o)
    high = cascade.upsample(upsampler, prompts, low, seed=seed, batch_size=20)
    chain = upsampling.cascade_report(low, high, prompts)

    folder = os.path.join(out, "tup_samples")
    os.makedirs(folder, exist_ok=True)
    shown = [prompts.index(p) for p in T2V_PROMPTS]
    fps = FPS / config.data.frame_strides[0]
    files = _write_clips(folder, "t2v_tup", {prompts[i]: high[i] for i in shown}, fps)
    files += _write_clips(folder, "t2v", {prompts[i]: low[i] for i in shown}, fps / 2)
    # The sheet puts each T2V frame above its place in the upsampled clip (gaps: inserted frames).
    spaced = [np.zeros_like(high[i]) + 255 for i in shown]
    for s, i in zip(spaced, shown):
        s[::2] = low[i]
    rows = [v for pair in zip(spaced, (high[i] for i in shown)) for v in pair]
    labels = [f"{kind}: {prompts[i]}" for i in shown for kind in ("T2V (4 frames)", "T2V then TUP (7 frames)")]
    sheet = demo_report.contact_sheet(rows, labels, os.path.join(out, "tup_contact_sheet.png"))

    best = max(inbetween["baselines"], key=lambda k: inbetween["baselines"][k]["psnr_db"])
    return dict(
        metric="PSNR of inserted frames vs the true renders (dB)",
        value=inbetween["model"]["psnr_db"],
        baseline=inbetween["baselines"][best]["psnr_db"],
        baseline_name=best,
        higher_is_better=True,
        inbetween=inbetween,
        cascade=chain,
        sheet=sheet,
        files=files,
        workdir=workdir,
    )


def main(argv) -> None:
    del argv
    from stiv_jax.console.errors import quiet_libraries, reported, verbose_from_env

    quiet_libraries(verbose_from_env())
    start = time.perf_counter()
    demo, out = _DEMO.value, _OUT.value
    with reported("demo-apps"):
        if not Workdir(os.path.join(demo, "workdir")).checkpoints.exists():
            raise ConfigError(f"--demo {demo!r}: no trained demo run in {demo}/workdir; run `make demo` first")
        os.makedirs(out, exist_ok=True)
        report = {"tup": tup(demo, out, _TUP_STEPS.value, _SEED.value)}
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    t = report["tup"]
    print(
        f"\ntup: inserted-frame PSNR {t['value']:.2f} dB (best baseline, {t['baseline_name']}: "
        f"{t['baseline']:.2f} dB); centroid error {t['inbetween']['model']['centroid_error_px']:.2f} px; "
        f"cascade: given frames kept={t['cascade']['given_kept']}, inserted frames between their "
        f"neighbours {t['cascade']['between_fraction']:.0%} of {t['cascade']['inserted_frames']}"
    )
    print(f"report: {out}/report.json   contact sheet: {t['sheet']}")
    print(f"total time: {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    app.run(main)
