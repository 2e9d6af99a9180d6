"""Every experiment file loads as ``stiv-train --config=`` loads it, validates and documents its run
command; the named paper runs are ``experiments/paper.py`` with the paper's values; a run's
``sampling`` section gives ``stiv-sample`` (and the demo) their defaults (issue 23)."""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from stiv_jax.cli import sample as sample_cli
from stiv_jax.console import flag_utils
from stiv_jax.model.config import resolve as resolve_model
from stiv_jax.sampling.guidance import Guidance
from stiv_jax.sampling.options import SampleOptions
from stiv_jax.train.config import base_config, validate

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
    p.relative_to(REPO).as_posix() for p in (REPO / "experiments").glob("*.py") if p.name != "__init__.py"
)
# The named paper runs: file → experiments/paper.py argument.
NAMED = {
    "t2i_xl_256": "stage=t2i,size=XL,res=256",
    "t2v_xl_256": "stage=t2v,size=XL,res=256",
    "stiv_xl_256": "stage=stiv,size=XL,res=256",
    "t2v_m_512": "stage=t2v,size=M,res=512",
    "stiv_m_512": "stage=stiv,size=M,res=512",
}


def load(spec: str, *overrides: str):
    """The config of ``--config=spec`` exactly as stiv-train / stiv-aot parse it (locked)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    fv(["stiv-train", f"--config={spec}", *overrides])
    return fv.config


def test_every_experiment_is_covered():
    assert {
        "experiments/paper.py",
        "experiments/demo_shapes.py",
        "experiments/tiny_synthetic.py",
        *(f"experiments/{name}.py" for name in NAMED),
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_experiment_loads_validates_and_names_its_run_command(path):
    config = load(str(REPO / path))
    assert config.is_locked
    validate(config)
    resolve_model(config.model)  # every model value checked
    options = SampleOptions.for_run(config)  # the sampling section is made of sampler options
    assert set(config.sampling) <= {f.name for f in dataclasses.fields(SampleOptions)}
    options.validate()
    doc = ast.get_docstring(ast.parse((REPO / path).read_text()))
    assert doc, f"{path}: no docstring"
    assert len(doc.splitlines()) <= 15, f"{path}: docstring of {len(doc.splitlines())} lines (at most 15)"
    assert f"--config={path}" in doc, f"{path}: the docstring should give the run command --config={path}"


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_paper_file_is_the_parameterised_run(name):
    named = load(str(REPO / f"experiments/{name}.py")).to_dict()
    assert named == load(f"{REPO / 'experiments/paper.py'}:{NAMED[name]}").to_dict()


# The paper's values (§3.1, App. B, Table 1), written out: what each named run must train with.
COMMON = {
    "num_train_steps": 400_000,
    "learning_rate": 2e-4,
    "warmup_steps": 1000,
    "lr_decay": "constant",
    "optimizer.b1": 0.9,
    "optimizer.b2": 0.999,
    "optimizer.weight_decay": 0.0,
    "optimizer.grad_clip_norm": 1.0,
    "optimizer.ema_decay": 0.9999,
    "mask_ratio": 0.5,
    "mae_loss_weight": 0.1,
    "model.num_decoder_blocks": 2,
    "image_dropout": 0.08,
    "text_dropout": 0.10,
    "data.frame_strides": (3,),
    "data.mode": "latents",
    "text.kind": "cached",
    "model.rope_ref_grid": (10, 16, 16),
    "sampling.steps": 50,
    "sampling.schedule": "linear_quadratic",
    "sampling.emulated_steps": 250,
    "sampling.guidance": "jit",
    "sampling.scale": 7.5,
    "sampling.image_scale": 1.5,
    "sampling.renorm": "none",
    "sampling.solver": "euler",
}
XLA = {"grad_accum_steps": 1, "model.attention_impl": "xla", "model.remat_policy": "save_self_attn"}
FIT_V5E = {"grad_accum_steps": 4, "model.attention_impl": "splash", "model.remat_policy": "full"}
PAPER = {
    "t2i_xl_256": dict(
        XLA,
        **{
            "model.size": "XL",
            "batch_size": 4096,
            "data.resolution": 256,
            "data.num_frames": 1,
            "tasks": "t2i",
            "model.temporal_attention": False,
        },
    ),
    "t2v_xl_256": dict(
        XLA,
        **{
            "model.size": "XL",
            "batch_size": 1024,
            "data.resolution": 256,
            "data.num_frames": 20,
            "tasks": "t2v",
            "model.temporal_attention": True,
        },
    ),
    "stiv_xl_256": dict(
        XLA,
        **{
            "model.size": "XL",
            "batch_size": 1024,
            "data.resolution": 256,
            "data.num_frames": 20,
            "tasks": "ti2v",
            "model.temporal_attention": True,
        },
    ),
    "t2v_m_512": dict(
        FIT_V5E,
        **{
            "model.size": "M",
            "batch_size": 1024,
            "data.resolution": 512,
            "data.num_frames": 20,
            "tasks": "t2v",
            "model.temporal_attention": True,
        },
    ),
    "stiv_m_512": dict(
        FIT_V5E,
        **{
            "model.size": "M",
            "batch_size": 1024,
            "data.resolution": 512,
            "data.num_frames": 20,
            "tasks": "ti2v",
            "model.temporal_attention": True,
        },
    ),
}


def _get(config, key):
    for part in key.split("."):
        config = config[part]
    return tuple(config) if isinstance(config, (list, tuple)) else config


@pytest.mark.parametrize("name", sorted(PAPER))
def test_named_paper_run_has_the_paper_values(name):
    config = load(str(REPO / f"experiments/{name}.py"))
    want = {**COMMON, **PAPER[name]}
    task = want.pop("tasks")
    assert {k: _get(config, k) for k in want} == want
    assert dict(config.tasks) == {t: float(t == task) for t in config.tasks}
    assert config.init_from.spatial == config.init_from.temporal == ""


def test_paper_arguments():
    default = load(str(REPO / "experiments/paper.py")).to_dict()  # the paper's default: XL, 256², 20 frames
    assert default == load(str(REPO / "experiments/t2v_xl_256.py")).to_dict()
    xxl = load(f"{REPO / 'experiments/paper.py'}:size=xxl,stage=T2I")
    assert (xxl.model.size, xxl.batch_size, xxl.data.resolution) == ("XXL", 4096, 256)
    for bad in ("stage=t2x", "size=S", "res=384", "resolution=512", "stage"):
        with pytest.raises(flags.IllegalFlagValueError, match=f"experiments/paper.py:{bad}: "):
            load(f"{REPO / 'experiments/paper.py'}:{bad}")


# ----------------------------------------------------------------- the sampling section


def test_guidance_defaults_are_written_once():
    g, o = Guidance(), SampleOptions()
    assert (o.guidance, o.scale, o.image_scale, o.renorm) == (g.kind, g.scale, g.image_scale, g.renorm)
    assert (g.kind, g.scale, g.image_scale, g.renorm) == ("jit", 7.5, 1.5, "none")  # the paper's (App. B)
    assert all(v is None for v in base_config("tiny").sampling.values())  # unset: the sampler's defaults


def _cli_options(tmp_path, config_json: dict | None, *args: str) -> SampleOptions:
    workdir = tmp_path / "run"
    if config_json is not None:
        workdir.mkdir(exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config_json))
    fv = flag_utils.parse(sample_cli._flag_values(), [f"--workdir={workdir}", "--prompt=x", *args], "stiv-sample")
    return sample_cli.run_options(fv)


def test_the_runs_sampling_section_is_stiv_samples_default(tmp_path):
    demo = json.loads(load(str(REPO / "experiments/demo_shapes.py")).to_json())
    built_in = SampleOptions()
    o = _cli_options(tmp_path, demo)
    assert (o.guidance, o.scale, o.steps) == ("jit", 2.0, 50)
    assert (o.schedule, o.image_scale, o.renorm, o.solver) == (
        built_in.schedule,
        built_in.image_scale,
        built_in.renorm,
        built_in.solver,
    )
    assert (o.high_scale, o.split_sigma) == (0.5, 1.0)
    o = _cli_options(tmp_path, demo, "--scale=3", "--steps=7", "--guidance=sit", "--high_scale=3")  # flags override
    assert (o.guidance, o.scale, o.steps, o.high_scale) == ("sit", 3.0, 7, 3.0)
    del demo["sampling"]  # a run from before the section: the built-in defaults
    assert _cli_options(tmp_path, demo) == built_in
    assert _cli_options(tmp_path / "missing", None, "--seed=4") == dataclasses.replace(built_in, seed=4)


def test_demo_samples_with_its_configs_settings():
    from stiv_jax.apps import demo_setup as demo

    config = demo.load_config(str(REPO / "experiments/demo_shapes.py"), "outputs/demo", None)
    # JIT-CFG s = 2, 50 steps (the values the demo sampled with before the section existed), and
    # since 2026-12-04 frequency-decoupled: 0.5 on what a 1-pixel blur removes
    expected = SampleOptions(guidance="jit", scale=2.0, steps=50, high_scale=0.5, split_sigma=1.0)
    assert SampleOptions.for_run(config) == expected


@pytest.mark.parametrize(
    "name,scale", [("demo_tup", 1.0), ("demo_v2v", 1.0), ("demo_long", 2.0), ("demo_multiview", 2.0)]
)
def test_the_applications_train_and_sample_as_they_were_measured(name, scale):
    """docs/applications.md's figures were taken with plain guidance and fine-tuning runs of 8
    clips per step whose learning rate decays to 0, EMA 0.99: neither the demo's frequency split
    nor its batch, EMA and constant learning rate (experiments/demo_shapes.py) is inherited."""
    config = load(str(REPO / f"experiments/{name}.py"))
    options = SampleOptions.for_run(config)
    assert (options.guidance, options.scale, options.high_scale) == ("jit", scale, None)
    assert (config.lr_decay, config.lr_final_fraction, config.learning_rate) == ("cosine", 0.0, 1e-3)
    assert (config.batch_size, config.optimizer.ema_decay) == (8, 0.99)


@pytest.mark.parametrize(
    "path",
    [
        "stiv_jax/sampling/pipeline.py",
        "stiv_jax/sampling/guidance.py",
        "stiv_jax/cli/sample.py",
        "stiv_jax/apps/demo.py",
        "stiv_jax/train/config.py",
        *EXPERIMENTS,
    ],
)
def test_modules_stay_short(path):
    assert len((REPO / path).read_text().splitlines()) < 400
