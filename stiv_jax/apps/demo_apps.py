"""``make demo-apps``: the paper's applications (§5, App. J) trained and measured on the demo.

  python -m stiv_jax.apps.demo_apps [--demo=outputs/demo] [--out=outputs/demo-apps] [--tup_steps=N] [--v2v_steps=N] [--long_steps=N] [--multiview_steps=N]

Runs after ``make demo`` and reuses its shards and its trained T2V run (``DEMO/workdir``):

* **tup** — the temporal upsampler (experiments/demo_tup.py): its latent cache (7 frames at stride
  2), fine-tuning from the demo model, then apps/upsampling.py's measurements (inserted frames vs
  the true renders, with the repeat and cross-fade baselines; the T2V → TUP cascade), a contact
  sheet and GIFs (4 → 7 frames).
* **v2v** — video prediction (experiments/demo_v2v.py): fine-tuning from the demo model on the
  demo's latent cache with the first 2 frames given, then apps/prediction.py's measurements (FVD
  against T2V from the same prompts; predicted frames vs the truth, with copying the last frame
  and the base model zero-shot as baselines), a contact sheet and GIFs.
* **long** — long video (experiments/demo_long.py): a latent cache of every clip at strides 1 and
  3, fine-tuning on T2V/TI2V (keyframes) and interpolation, then apps/long_video.py's reading of
  every frame of 12-frame clips against the demo model, a contact sheet and GIFs.
* **multiview** — multi-view generation (experiments/demo_multiview.py): object orbits rendered
  (data/orbits.py) → shards → a 7-frame latent cache, fine-tuning from the demo model with the
  front view given and zero-latent null images, then apps/multiview.py's PSNR and SSIM of the
  generated views of held-out objects against copying the front view, a contact sheet and GIFs.

Writes ``OUT/report.json`` (``{"tup": {"metric", "value", "baseline", "higher_is_better", …},
"v2v": {…}, "long": {…}, "multiview": {…}}``).
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
_V2V_STEPS = flags.DEFINE_integer("v2v_steps", None, "Override the video predictor's num_train_steps.")
_LONG_STEPS = flags.DEFINE_integer("long_steps", None, "Override the long-video run's num_train_steps.")
_MULTIVIEW_STEPS = flags.DEFINE_integer("multiview_steps", None, "Override the multi-view run's num_train_steps.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")

TUP_CONFIG, V2V_CONFIG, LONG_CONFIG = "experiments/demo_tup.py", "experiments/demo_v2v.py", "experiments/demo_long.py"
MULTIVIEW_CONFIG = "experiments/demo_multiview.py"
NUM_ORBITS = 800  # training objects of the multi-view run


def _fine_tune(
    config_path: str,
    demo: str,
    out: str,
    name: str,
    steps: int | None,
    latents: str | None = None,
    shards: str | None = None,
):
    """Config ``config_path`` started from the demo run (its latent cache ``latents`` written from
    ``shards``, default the demo's, when given, at every stride of the config, else the demo's own
    cache) and trained in ``OUT/name`` unless done there; returns ``(config, workdir)``."""
    from stiv_jax.storage.checkpoints import latest_step
    from stiv_jax.train.loop import train

    config = load_config(config_path, demo, steps)
    config.init_from.spatial = config.init_from.temporal = os.path.join(demo, "workdir")
    if latents is not None:
        config.data.path = os.path.join(out, latents)
        every_stride = len(config.data.frame_strides) > 1
        encode_latents(shards or os.path.join(demo, "shards"), config.data.path, config, every_stride=every_stride)
    workdir = os.path.join(out, name)
    if Workdir(workdir).checkpoints.exists() and latest_step(workdir) == config.num_train_steps:
        return config, workdir
    start = time.perf_counter()
    print(f"\n=== {name}: training {config_path} for {config.num_train_steps} steps in {workdir}", flush=True)
    final = train(config, workdir)
    if "stopped_at" in final:
        raise SystemExit(f"training interrupted at step {final['stopped_at']}; run again to resume")
    print(f"trained in {time.perf_counter() - start:.0f}s, final loss {final.get('loss', float('nan')):.4f}")
    return config, workdir


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

    config, workdir = _fine_tune(TUP_CONFIG, demo, out, "tup", steps, latents="latents_tup")

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

    moving = {name: scores["moving"] for name, scores in inbetween["baselines"].items()}
    best = max(moving, key=lambda k: moving[k]["psnr_db"])
    return dict(
        metric="PSNR of inserted frames vs the true renders, captions that move (dB)",
        value=inbetween["model"]["moving"]["psnr_db"],
        baseline=moving[best]["psnr_db"],
        baseline_name=best,
        higher_is_better=True,
        inbetween=inbetween,
        cascade=chain,
        sheet=sheet,
        files=files,
        workdir=workdir,
    )


def v2v(demo: str, out: str, steps: int | None, seed: int) -> dict:
    """Trains, samples and measures video prediction; returns its report entry."""
    from stiv_jax.apps import prediction
    from stiv_jax.apps import report as demo_report
    from stiv_jax.data.synthetic import FPS
    from stiv_jax.sampling.pipeline import load_sampler

    config, workdir = _fine_tune(V2V_CONFIG, demo, out, "v2v", steps)
    print("\n=== v2v: predicted clips vs T2V and the truth (FVD, PSNR)", flush=True)
    predictor, base = load_sampler(workdir), load_sampler(os.path.join(demo, "workdir"))
    prompts = demo_report.all_prompts()
    result = prediction.prediction_report(predictor, base, prompts, seed=seed)
    truth_videos, predicted = result.pop("truth_videos"), result.pop("v2v_videos")
    shown = [prompts.index(p) for p in T2V_PROMPTS]
    truth, guessed = truth_videos[shown], predicted[shown]
    k = result["given_frames"]
    folder = os.path.join(out, "v2v_samples")
    os.makedirs(folder, exist_ok=True)
    files = _write_clips(folder, "v2v", dict(zip(T2V_PROMPTS, guessed)), FPS / config.data.frame_strides[0])
    rows = [v for pair in zip(truth, guessed) for v in pair]
    labels = [f"{kind}: {p}" for p in T2V_PROMPTS for kind in ("real clip", f"first {k} given, rest predicted")]
    sheet = demo_report.contact_sheet(rows, labels, os.path.join(out, "v2v_contact_sheet.png"))
    best = min((n for n in result["fvd"] if n.startswith("t2v")), key=result["fvd"].get)
    return dict(
        metric="FVD of the clips vs held-out real clips",
        value=result["fvd"]["v2v"],
        baseline=result["fvd"][best],
        baseline_name=f"{best} (T2V from the same prompts)",
        higher_is_better=False,
        **result,
        sheet=sheet,
        files=files,
        workdir=workdir,
    )


def long(demo: str, out: str, steps: int | None, seed: int) -> dict:
    """Trains, samples and measures long video (two modes); returns its report entry."""
    from stiv_jax.apps import long_video
    from stiv_jax.apps import report as demo_report
    from stiv_jax.data.synthetic import FPS
    from stiv_jax.sampling.pipeline import load_sampler

    config, workdir = _fine_tune(LONG_CONFIG, demo, out, "long", steps, latents="latents_long")
    print("\n=== long: keyframes + interpolation, every frame read back", flush=True)
    sampler, base = load_sampler(workdir), load_sampler(os.path.join(demo, "workdir"))
    prompts = demo_report.all_prompts(moving_only=True)
    result = long_video.long_report(sampler, base, prompts, seed=seed)
    videos, base_videos = result.pop("long_videos"), result.pop("base_videos")
    shown = [prompts.index(p) for p in T2V_PROMPTS]
    folder = os.path.join(out, "long_samples")
    os.makedirs(folder, exist_ok=True)
    fps = FPS / result["small_stride"]
    files = _write_clips(folder, "long", {prompts[i]: videos[i] for i in shown}, fps)
    files += _write_clips(folder, "base", {prompts[i]: base_videos[i] for i in shown}, fps)
    rows = [v for i in shown for v in (videos[i], base_videos[i])]
    labels = [f"{kind}: {prompts[i]}" for i in shown for kind in ("long-video run", "demo model, untrained for it")]
    sheet = demo_report.contact_sheet(rows, labels, os.path.join(out, "long_contact_sheet.png"))
    return dict(
        metric="clips with the asked colour and shape in every frame and monotonic motion",
        value=result["long"]["all"],
        baseline=result["base"]["all"],
        baseline_name="the demo model it was fine-tuned from, same sampling",
        higher_is_better=True,
        **result,
        sheet=sheet,
        files=files,
        workdir=workdir,
    )


def multiview(demo: str, out: str, steps: int | None, seed: int) -> dict:
    """Renders orbits, trains, samples and measures multi-view generation; returns its report entry."""
    from stiv_jax.apps import multiview as mv
    from stiv_jax.apps import report as demo_report
    from stiv_jax.data import clips, orbits
    from stiv_jax.data.ingest import make_shards
    from stiv_jax.sampling.pipeline import load_sampler

    data, shards = os.path.join(out, "orbits"), os.path.join(out, "orbit_shards")
    if not os.path.exists(os.path.join(shards, "manifest.json")):
        print(f"\n=== multiview: rendering {NUM_ORBITS} object orbits into {data}", flush=True)
        orbits.make_orbit_data(data, NUM_ORBITS)
        make_shards(data, shards, os.path.join(data, "captions.jsonl"), clips.CurationOptions(split_scenes=False))
    config, workdir = _fine_tune(MULTIVIEW_CONFIG, demo, out, "multiview", steps, "latents_multiview", shards)
    print("\n=== multiview: generated views of held-out objects vs their true renders", flush=True)
    sampler = load_sampler(workdir)
    result = mv.multiview_report(sampler, seed=seed, scales=(1.0, 3.5))  # 3.5: the paper's
    truth, views = result.pop("truth_videos"), result.pop("multiview_videos")
    shown = range(4)
    folder = os.path.join(out, "multiview_samples")
    os.makedirs(folder, exist_ok=True)
    files = _write_clips(folder, "multiview", {f"object {i}": views[i] for i in shown}, 4.0)
    files += _write_clips(folder, "truth", {f"object {i}": truth[i] for i in shown}, 4.0)
    rows = [v for i in shown for v in (truth[i], views[i])]
    labels = [f"{kind}, held-out object {i}" for i in shown for kind in ("true views", "front given, rest generated")]
    sheet = demo_report.contact_sheet(rows, labels, os.path.join(out, "multiview_contact_sheet.png"))
    model = result["model"][f"s{result['scale']:g}"]
    return dict(
        metric="PSNR of generated views vs the true renders of held-out objects (dB)",
        value=model["psnr_db"],
        baseline=result["copy_front"]["psnr_db"],
        baseline_name="copying the front view to every azimuth",
        higher_is_better=True,
        ssim=model["ssim"],
        baseline_ssim=result["copy_front"]["ssim"],
        **result,
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
        report = {
            "tup": tup(demo, out, _TUP_STEPS.value, _SEED.value),
            "v2v": v2v(demo, out, _V2V_STEPS.value, _SEED.value),
            "long": long(demo, out, _LONG_STEPS.value, _SEED.value),
            "multiview": multiview(demo, out, _MULTIVIEW_STEPS.value, _SEED.value),
        }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    t = report["tup"]
    print(
        f"\ntup: inserted-frame PSNR {t['value']:.2f} dB (best baseline, {t['baseline_name']}: "
        f"{t['baseline']:.2f} dB); centroid error {t['inbetween']['model']['moving']['centroid_error_px']:.2f} px; "
        f"cascade: given frames kept={t['cascade']['given_kept']}, inserted frames between their "
        f"neighbours {t['cascade']['between_fraction']:.0%} of {t['cascade']['inserted_frames']}"
    )
    v = report["v2v"]
    print(
        f"v2v: FVD {v['value']:.1f} (T2V from the same prompts: {v['baseline']:.1f}; real clips "
        f"{v['fvd']['real']:.1f}); predicted frames PSNR {v['predicted_frames']['v2v']['psnr_db']:.2f} dB "
        f"(copying the last frame: {v['predicted_frames']['copy_last']['psnr_db']:.2f} dB)"
    )
    g = report["long"]
    print(
        f"long: {g['value']:.0%} of {g['clips']} clips keep colour and shape in all {g['frames']} frames "
        f"and move monotonically (the demo model: {g['baseline']:.0%})"
    )
    m = report["multiview"]
    print(
        f"multiview: generated views PSNR {m['value']:.2f} dB, SSIM {m['ssim']:.3f} over {m['objects']} "
        f"held-out objects (copying the front view: {m['baseline']:.2f} dB, SSIM {m['baseline_ssim']:.3f})"
    )
    print(f"report: {out}/report.json   contact sheets: {t['sheet']}, {v['sheet']}, {g['sheet']}, {m['sheet']}")
    print(f"total time: {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    app.run(main)
