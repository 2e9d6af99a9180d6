"""PyTorch export (issue 7): Flax ↔ PyTorch parity, bit-exact round trips, bf16, clear errors,
checkpoint → safetensors → PyTorch through the CLI, and a jax-free import of the torch module."""

import json
import os
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx, traverse_util
from safetensors.numpy import load_file

from stiv_jax.cli import export_torch
from stiv_jax.export import convert, torch_stiv
from stiv_jax.model import maskdit
from stiv_jax.model.config import get_model_config, resolve
from tests.export_utils import (
    assert_trainer_export_runs_in_torch,
    flax_forward,
    pure_params,
    rel_err,
    run_both,
    to_torch,
    write_trainer_checkpoint,
)
from tests.model_utils import make_inputs, random_model

TOL = 1e-4  # max|torch - flax| / max|flax|, float32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # for subprocesses


def torch_twin(flax_model) -> torch_stiv.STIV:
    """The PyTorch module carrying ``flax_model``'s params (strict load)."""
    model = torch_stiv.STIV(flax_model.cfg.to_dict())
    model.load_state_dict(to_torch(convert.flax_to_torch(pure_params(flax_model), flax_model.cfg)), strict=True)
    return model.eval()


PARITY_CASES = {
    # name: (size, config overrides, frames, cond, masked, empty_prompt)
    "tiny-t2i-image": ("tiny", dict(temporal_attention=False), 1, False, False, False),
    "tiny-video-cond-maskdit-empty-prompt": ("tiny", {}, 4, True, True, True),
    "small-image-on-video-model": ("small", {}, 1, True, False, False),
    "small-video-rope-interp": ("small", dict(rope_ref_grid=(2, 2, 2)), 8, True, False, False),
    "small-video-sincos-pos-embed-interp": (
        "small",
        dict(pos_embed="sincos", rope_ref_grid=(2, 2, 2)),
        8,
        True,
        False,
        False,
    ),
    "small-t2i-config-maskdit": ("small", dict(temporal_attention=False, num_decoder_blocks=1), 1, False, True, False),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_torch_matches_flax(case):
    size, overrides, frames, cond, masked, empty_prompt = PARITY_CASES[case]
    cfg = get_model_config(size, **overrides)
    flax_model = random_model(cfg, seed=3)
    x, t, kw = make_inputs(cfg, frames=frames, cond=cond)  # sample 0's prompt is padded
    if not cond:
        kw["cond_mask"] = None
    if empty_prompt:  # sample 1 sees no text token: Flax averages the values, SDPA alone gives 0
        kw["text_mask"] = kw["text_mask"].at[1].set(False)
    keep = maskdit.sample_keep_indices(jax.random.key(0), 2, 16, 0.5) if masked else None
    out, ref = run_both(flax_model, torch_twin(flax_model), x, t, kw, keep)
    assert out.shape == ref.shape == x.shape and out.dtype == np.float32
    assert rel_err(out, ref) <= TOL, rel_err(out, ref)


def test_torch_matches_flax_with_x_prediction_on_both_sides_of_the_time_floor():
    """``prediction='x'``: the twin turns its output into the velocity the same way, for t = 0.5
    and for t = 0.99 (where 1 − t is floored at 0.05)."""
    cfg = get_model_config("tiny", prediction="x")
    flax_model = random_model(cfg, seed=3)
    x, _, kw = make_inputs(cfg, frames=4)
    t = np.array([0.5, 0.99], np.float32)
    out, ref = run_both(flax_model, torch_twin(flax_model), x, t, kw, None)
    assert rel_err(out, ref) <= TOL, rel_err(out, ref)


def test_parity_check_can_fail_and_covers_every_branch():
    """Perturbing a parameter of any branch (temporal attn, cross-attn, indicator, decoder, output)
    breaks parity, so the tolerance is meaningful and none of them is inactive in the test."""
    cfg = get_model_config("tiny")
    flax_model = random_model(cfg, seed=3)
    x, t, kw = make_inputs(cfg, frames=4)
    keep = maskdit.sample_keep_indices(jax.random.key(0), 2, 16, 0.5)
    for key in ("blocks.1.temporal_attn.k_norm.weight", "blocks.0.cross_attn.v.bias", "cond_indicator.weight",
                "decoder_blocks.1.modulation", "mask_token", "unpatchify.bias", "condition.micro.fc1.weight"):  # fmt: skip
        model = torch_twin(flax_model)
        # Seeded: an unseeded 0.05 nudge of the k_norm scale once moved the output by only 8e-4.
        # At 0.2 the smallest effect over 10 seeds is 5.5e-3 (k_norm), 55x the tolerance.
        noise = torch.Generator().manual_seed(0)
        with torch.no_grad():
            param = model.get_parameter(key)
            param.add_(0.2 * torch.randn(param.shape, generator=noise))
        out, ref = run_both(flax_model, model, x, t, kw, keep)
        assert rel_err(out, ref) > 10 * TOL, key


def test_flax_torch_flax_round_trip_is_bit_exact():
    cfg = get_model_config("tiny")
    source = random_model(cfg, seed=6)
    params = pure_params(source)
    state_dict = torch_twin(source).state_dict()  # through the real nn.Module
    back = convert.torch_to_flax(state_dict, cfg)
    flat, flat_back = traverse_util.flatten_dict(params), traverse_util.flatten_dict(back)
    assert flat.keys() == flat_back.keys()
    for k in flat:
        assert flat_back[k].dtype == flat[k].dtype and np.array_equal(flat_back[k], flat[k]), k
    target = random_model(cfg, seed=7)
    state = nnx.state(target, nnx.Param)
    nnx.replace_by_pure_dict(state, back)
    nnx.update(target, state)
    x, t, kw = make_inputs(cfg)
    np.testing.assert_array_equal(flax_forward(target, x, t, kw, None), flax_forward(source, x, t, kw, None))


def test_file_round_trip_through_torch_save(tmp_path):
    """export → load_torch_stiv → torch-side safetensors save → read_export gives the same params."""
    from safetensors.torch import save_file

    cfg = get_model_config("tiny", temporal_attention=False)
    params = pure_params(random_model(cfg, seed=9))
    out, cfg_path = convert.export(params, cfg, tmp_path / "a.safetensors")
    model = torch_stiv.load_torch_stiv(out)
    save_file(model.state_dict(), tmp_path / "b.safetensors")
    os.link(cfg_path, tmp_path / "b.json")
    back_cfg, back = convert.read_export(tmp_path / "b.safetensors")
    assert back_cfg.to_dict() == resolve(cfg).to_dict()
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b, strict=True), back, params)


def test_bfloat16_export_is_the_rounded_float32():
    cfg = get_model_config("tiny")
    flax_model = random_model(cfg, seed=8)
    params = pure_params(flax_model)
    f32 = convert.flax_to_torch(params, cfg)
    bf16 = convert.flax_to_torch(params, cfg, dtype="bfloat16")
    assert f32.keys() == bf16.keys()
    for k, v in bf16.items():
        assert v.dtype == ml_dtypes.bfloat16, k
        rounded = torch.from_numpy(f32[k]).to(torch.bfloat16)  # torch's own round-to-nearest-even
        assert torch.equal(torch.from_numpy(v.view(np.int16)), rounded.view(torch.int16)), k
    bf16_torch = {k: torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) for k, v in bf16.items()}
    back = traverse_util.flatten_dict(convert.torch_to_flax(bf16_torch, cfg))
    for k, v in traverse_util.flatten_dict(params).items():  # torch bf16 -> numpy is bit-exact
        assert back[k].dtype == ml_dtypes.bfloat16 and np.array_equal(back[k], v.astype(ml_dtypes.bfloat16)), k
    # A bf16 module (bf16 matmuls, float32 norms/residual) stays close to the float32 output.
    model = torch_stiv.STIV(resolve(cfg).to_dict()).to(torch.bfloat16)
    model.load_state_dict(bf16_torch)
    x, t, kw = make_inputs(cfg)
    out, ref = run_both(flax_model, model, x, t, kw)
    assert out.dtype == np.float32 and rel_err(out, ref) < 0.05


def test_mismatch_errors_name_the_key():
    tiny, small = get_model_config("tiny"), get_model_config("small")
    params = pure_params(random_model(tiny, seed=0))
    with pytest.raises(
        convert.ConversionError,
        match=r"shape mismatch at adaln\.proj\.kernel: config gives \(128, 768\), got \(64, 384\)(.|\n)*\.\.\. and \d+ more",
    ):
        convert.flax_to_torch(params, small)
    no_t2i = get_model_config("tiny", temporal_attention=False)
    with pytest.raises(convert.ConversionError, match=r"unexpected key blocks\.temporal_attn\.q\.kernel"):
        convert.flax_to_torch(params, no_t2i)
    state = convert.flax_to_torch(params, tiny)
    del state["decoder_blocks.1.cross_attn.out.weight"]
    state["blocks.0.mlp.fc1.weight"] = state["blocks.0.mlp.fc1.weight"].T
    with pytest.raises(convert.ConversionError) as e:
        convert.torch_to_flax(state, tiny)
    assert "missing key decoder_blocks.1.cross_attn.out.weight (64, 64)" in str(e.value)
    assert "shape mismatch at blocks.0.mlp.fc1.weight: config gives (256, 64), got (64, 256)" in str(e.value)


def test_joint_attention_layout_is_refused_not_exported_wrong():
    # The PyTorch model has only the factorised layout; a joint-attention checkpoint would load
    # into it with matching shapes (temporal_attention=False) and silently compute something else.
    joint = get_model_config("tiny", attention_layout="joint", temporal_attention=False)
    params = pure_params(random_model(joint, seed=0))
    with pytest.raises(convert.ConversionError, match="attention_layout='joint'"):
        convert.flax_to_torch(params, joint)


def test_load_torch_stiv_rejects_config_mismatch(tmp_path):
    cfg = get_model_config("tiny")
    out, cfg_path = convert.export(pure_params(random_model(cfg, seed=0)), cfg, tmp_path / "m.safetensors")
    with open(cfg_path) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(resolve(cfg).to_dict()))
    with open(cfg_path, "w") as f:
        json.dump({**saved, "num_layers": 3}, f)
    with pytest.raises(
        ValueError,
        match=r"m\.safetensors does not match its config:\n  missing key blocks\.2\.cross_attn\.k\.bias \(64,\)",
    ):
        torch_stiv.load_torch_stiv(out)
    os.remove(cfg_path)
    with pytest.raises(FileNotFoundError, match=r"m\.json: model config missing"):
        torch_stiv.load_torch_stiv(out)


def test_checkpoint_to_torch_through_the_cli(tmp_path, capsys):
    cfg = get_model_config("tiny")
    workdir = tmp_path / "run"
    write_trainer_checkpoint(
        workdir, cfg, pure_params(random_model(cfg, seed=0)), pure_params(random_model(cfg, seed=1)), step=1
    )
    raw, ema = random_model(cfg, seed=10), random_model(cfg, seed=11)
    write_trainer_checkpoint(workdir, cfg, pure_params(raw), pure_params(ema), step=3)

    restored_cfg, restored, _ = convert.load_run(workdir)  # latest step, EMA
    assert restored_cfg.to_dict() == resolve(cfg).to_dict()
    jax.tree.map(np.testing.assert_array_equal, restored, pure_params(ema))

    assert assert_trainer_export_runs_in_torch(workdir, tmp_path / "ema") <= TOL
    assert assert_trainer_export_runs_in_torch(workdir, tmp_path / "raw", ema=False) <= TOL
    exported = load_file(tmp_path / "raw" / "stiv.safetensors")
    for k, v in convert.flax_to_torch(pure_params(raw), cfg).items():
        np.testing.assert_array_equal(exported[k], v, err_msg=k)
    assert str(tmp_path / "ema" / "stiv.safetensors") in capsys.readouterr().out

    bf16_out = str(tmp_path / "bf16.safetensors")
    export_torch.run([f"--workdir={workdir}", f"--out={bf16_out}", "--dtype=bfloat16", "--step=1"])
    model = torch_stiv.load_torch_stiv(bf16_out)
    assert model.mask_token.dtype == torch.bfloat16
    with open(torch_stiv.config_path(bf16_out)) as f:
        assert json.load(f)["param_dtype"] == "bfloat16"
    step1_ema = pure_params(random_model(cfg, seed=1))["mask_token"]
    np.testing.assert_array_equal(
        model.mask_token.detach().float().numpy(), step1_ema.astype(ml_dtypes.bfloat16).astype(np.float32)
    )


STIV_EXPORT_TORCH = os.path.join(os.path.dirname(sys.executable), "stiv-export-torch")


def test_cli_errors_are_clear(tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "stiv_jax.cli.export_torch", f"--workdir={tmp_path}", f"--out={tmp_path}/m.safetensors"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("stiv-export-torch: error: ")
        and "config.json: no training config" in proc.stderr
    )
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    cfg = get_model_config("tiny")
    write_trainer_checkpoint(
        tmp_path, cfg, pure_params(random_model(cfg, seed=0)), pure_params(random_model(cfg, seed=0)), step=2
    )
    with pytest.raises(SystemExit) as e:
        export_torch.run([f"--workdir={tmp_path}", f"--out={tmp_path}/m.pt"])
    assert (
        e.value.code == 2
        and capsys.readouterr().err
        == f"stiv-export-torch: error: --out must end with .safetensors, got '{tmp_path}/m.pt'\n"
    )


def test_cli_missing_or_damaged_step_names_the_steps(tmp_path, capsys):
    cfg = get_model_config("tiny")
    for step in (1, 2):
        write_trainer_checkpoint(
            tmp_path, cfg, pure_params(random_model(cfg, seed=0)), pure_params(random_model(cfg, seed=step)), step=step
        )
    out = f"--out={tmp_path}/m.safetensors"
    with pytest.raises(SystemExit) as e:
        export_torch.run([f"--workdir={tmp_path}", out, "--step=5"])
    assert e.value.code == 2
    assert (
        capsys.readouterr().err
        == f"stiv-export-torch: error: no checkpoint at step 5 in {tmp_path}/checkpoints; available steps: 1, 2\n"
    )
    os.remove(tmp_path / "checkpoints" / "2" / "state" / "_METADATA")  # a half-copied latest step
    with pytest.raises(SystemExit) as e:
        export_torch.run([f"--workdir={tmp_path}", out])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"stiv-export-torch: error: checkpoint step 2 in {tmp_path}/checkpoints cannot be read (")
    assert err.endswith("; other steps: 1 (--step=N)\n") and not os.path.exists(tmp_path / "m.safetensors")
    export_torch.run([f"--workdir={tmp_path}", out, "--step=1"])  # the older step still exports


def test_cli_outputs_get_the_usual_file_mode(tmp_path):
    """safetensors (and the atomic JSON write) create 0600 files; exports follow the umask."""
    cfg = get_model_config("tiny")
    write_trainer_checkpoint(
        tmp_path / "run", cfg, pure_params(random_model(cfg, seed=0)), pure_params(random_model(cfg, seed=1)), step=1
    )
    out = tmp_path / "export" / "m.safetensors"
    command = f"umask 027 && {STIV_EXPORT_TORCH} --workdir={tmp_path / 'run'} --out={out}"
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    assert proc.returncode == 0 and proc.stdout == f"{out}\n", proc.stderr
    for path in (out, tmp_path / "export" / "m.json"):
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o640), path


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_a_file_that_is_no_safetensors_is_named(tmp_path, damage):
    cfg = get_model_config("tiny")
    out, _ = convert.export(pure_params(random_model(cfg, seed=0)), cfg, tmp_path / "m.safetensors")
    if damage == "text":
        with open(out, "w") as f:
            f.write("this is not a tensor file\n")
    else:
        os.truncate(out, os.path.getsize(out) // 2)
    message = rf"^{out}: not a valid safetensors file \(Error while deserializing header: .*\)$"
    with pytest.raises(convert.ConversionError, match=message):
        convert.read_export(out)
    with pytest.raises(ValueError, match=message):
        torch_stiv.load_torch_stiv(out)


_NO_JAX = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('jax', 'jaxlib', 'flax', 'orbax', 'ml_collections', 'chex', 'optax', 'ml_dtypes'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch
from stiv_jax.export.torch_stiv import load_torch_stiv
model = load_torch_stiv(sys.argv[1])
cfg, (b, t, L) = model.config, (2, 2, 5)
v = model(torch.randn(b, t, 8, 8, cfg['in_channels']), torch.rand(b), text=torch.randn(b, L, cfg['text_dim']),
          text_mask=torch.ones(b, L, dtype=torch.bool), pooled_text=torch.randn(b, cfg['text_dim']),
          micro=torch.rand(b, 6), cond_mask=torch.zeros(b, t, dtype=torch.bool))
assert not any(m.split('.')[0] in ('jax', 'flax') for m in sys.modules)
print(tuple(v.shape), v.dtype)
"""


def test_torch_module_loads_and_runs_without_jax(tmp_path):
    cfg = get_model_config("tiny")
    out, _ = convert.export(pure_params(random_model(cfg)), cfg, tmp_path / "m.safetensors", dtype="bfloat16")
    proc = subprocess.run(
        [sys.executable, "-c", _NO_JAX, out], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(2, 2, 8, 8, 4) torch.float32"


def test_export_of_a_trainer_checkpoint_runs_in_torch(tmp_path):
    from tests.export_utils import assert_trainer_export_runs_in_torch
    from tests.train_utils import run, tiny_train_config

    workdir = str(tmp_path / "run")
    run(tiny_train_config(num_train_steps=3), workdir)
    assert_trainer_export_runs_in_torch(workdir, tmp_path, ema=True)
    assert_trainer_export_runs_in_torch(workdir, tmp_path, ema=False)
