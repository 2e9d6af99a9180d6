"""The PyTorch twin's contract with the Flax model (issue 23): stiv_jax/export/torch_stiv.py is
kept in sync by hand, so these tests fail when the Flax side grows past it.

1. Every key of the Flax model config is read by the twin (``CONFIG_KEYS``, ``OPTIONS``) or listed
   as non-architectural (``NON_ARCHITECTURAL_KEYS``, with its reason); the twin refuses any other.
2. Every value of every option-valued key (``model/config.py`` ``CHOICES``, the booleans) has a
   Flax == PyTorch parity case on random weights, or is refused by the twin itself.
3. The constants the twin copies equal their Flax originals.
"""

from __future__ import annotations

import collections
import functools
import inspect
import re
from typing import Any

import jax
import numpy as np
import pytest
import torch

from stiv_jax.export import convert, torch_stiv
from stiv_jax.flow import interpolant
from stiv_jax.model import conditioning, config, layers, maskdit, posembed
from stiv_jax.model.config import get_model_config, resolve
from tests.export_utils import pure_params, rel_err, run_both, to_torch
from tests.model_utils import make_inputs, random_model

TOL = 1e-4  # max|torch - flax| / max|flax|, float32 (as tests/test_export_torch.py)
LISTS = ("CONFIG_KEYS", "OPTIONS", "NON_ARCHITECTURAL_KEYS")


def contract_gaps(flax_keys) -> list[str]:
    """Breaches of (1): a Flax key in none of the twin's lists (``torch_stiv.unknown_keys``, what
    the twin refuses), a listed key the Flax config lacks, a key in two lists."""
    gaps = [f"{k}: neither implemented nor non-architectural" for k in torch_stiv.unknown_keys(flax_keys)]
    for name in LISTS:
        gaps += [
            f"{k}: in torch_stiv.{name}, not in the Flax config"
            for k in getattr(torch_stiv, name)
            if k not in flax_keys
        ]
    counts = collections.Counter(k for name in LISTS for k in getattr(torch_stiv, name))
    return gaps + [f"{k}: in several lists" for k, n in counts.items() if n > 1]


@pytest.mark.parametrize("size", list(config.SIZES))
def test_every_flax_config_key_is_implemented_or_non_architectural(size):
    assert contract_gaps(set(get_model_config(size).keys())) == []
    assert all(isinstance(why, str) and why for why in torch_stiv.NON_ARCHITECTURAL_KEYS.values())


def test_a_key_added_to_flax_only_breaks_the_contract_and_is_refused(monkeypatch):
    """The check can fail: a new Flax key is reported, the twin refuses the config (a torch-only
    user cannot build a model that ignores it) and so does the export; a dropped one is stale."""
    defaults = config._defaults

    def with_new_key(size):
        c = defaults(size)
        c.new_feature = True
        return c

    monkeypatch.setattr(config, "_defaults", with_new_key)
    cfg = resolve(get_model_config("tiny"))
    assert contract_gaps(set(cfg.keys())) == ["new_feature: neither implemented nor non-architectural"]
    with pytest.raises(ValueError, match="unknown key 'new_feature'"):
        torch_stiv.STIV(cfg.to_dict())
    with pytest.raises(convert.ConversionError, match="cannot be exported: unknown key 'new_feature'"):
        convert.model_config(cfg)
    monkeypatch.undo()
    stale = set(get_model_config("tiny").keys()) - {"rope_theta"}
    assert contract_gaps(stale) == ["rope_theta: in torch_stiv.CONFIG_KEYS, not in the Flax config"]


class _Recording(dict):
    """A config dict that remembers which keys were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_the_twin_reads_every_key_it_claims_to_implement(monkeypatch):
    """``CONFIG_KEYS`` is no idle list: building and running the twin reads each of them, and
    no key outside ``CONFIG_KEYS`` and ``OPTIONS``."""
    parse = torch_stiv.config_dict
    monkeypatch.setattr(torch_stiv, "config_dict", lambda c: _Recording(parse(c)))
    cfg = resolve(get_model_config("tiny"))
    model = torch_stiv.STIV(cfg.to_dict()).eval()
    x, t, kw = make_inputs(cfg, frames=4, cond=True)
    with torch.no_grad():
        model(to_torch(x), to_torch(t), keep_idx=torch.tensor([[0, 5], [3, 9]]), **to_torch(kw))
    assert set(torch_stiv.CONFIG_KEYS) <= model.config.read <= {*torch_stiv.CONFIG_KEYS, *torch_stiv.OPTIONS}


# ------------------------------------------------------------------------------ option values


def _option_values() -> list[tuple[str, Any]]:
    """``(key, value)``: every choice config.py validates (``CHOICES``), both values of every
    boolean key, and the value that switches MaskDiT off."""
    defaults = get_model_config("tiny")
    pairs = [(k, v) for k, choices in config.CHOICES.items() for v in choices]
    pairs += [(k, b) for k in defaults if isinstance(defaults[k], bool) for b in (True, False)]
    return pairs + [("num_decoder_blocks", 0)]  # "0 disables MaskDiT" (config.py)


OPTION_VALUES = _option_values()
NEEDS_BACKEND = {("attention_impl", "cudnn"): "gpu"}  # its kernel exists there only
COMPANIONS = {("attention_layout", "joint"): (("temporal_attention", False),)}  # what validate() asks for


def _twin(flax_model) -> torch_stiv.STIV:
    model = torch_stiv.STIV(flax_model.cfg.to_dict())
    model.load_state_dict(to_torch(convert.flax_to_torch(pure_params(flax_model), flax_model.cfg)), strict=True)
    return model.eval()


@functools.cache
def parity_error(overrides: tuple[tuple[str, Any], ...]) -> float:
    """Relative Flax ↔ PyTorch error of the tiny model with ``overrides`` on random weights: video
    with a replaced frame, MaskDiT tokens if it has a decoder, t = 0.99 past the x-prediction floor."""
    cfg = get_model_config("tiny", **dict(overrides))
    flax_model = random_model(cfg, seed=3)
    x, _, kw = make_inputs(cfg, frames=4, cond=True)
    t = np.array([0.3, 0.99], np.float32)
    keep = maskdit.sample_keep_indices(jax.random.key(0), 2, 16, 0.5) if cfg.num_decoder_blocks else None
    out, ref = run_both(flax_model, _twin(flax_model), x, t, kw, keep)
    return rel_err(out, ref)


@pytest.mark.parametrize(("key", "value"), OPTION_VALUES, ids=[f"{k}={v}" for k, v in OPTION_VALUES])
def test_every_option_value_has_parity_or_is_refused_by_the_twin(key, value):
    base = resolve(get_model_config("tiny")).to_dict()
    if problems := torch_stiv.unsupported({**base, key: value}):
        with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}")):
            torch_stiv.STIV({**base, key: value})
        assert key in torch_stiv.OPTIONS and problems == [
            f"{key}={value!r} (implemented: {', '.join(torch_stiv.OPTIONS[key])})"
        ]
        return
    backend = NEEDS_BACKEND.get((key, value))
    if backend and jax.default_backend() != backend:
        pytest.skip(f"{key}={value!r} needs a {backend}")
    overrides = () if value == base[key] else ((key, value), *COMPANIONS.get((key, value), ()))  # the default runs once
    assert parity_error(overrides) <= TOL, parity_error(overrides)


def test_twin_options_are_flax_choices_with_the_flax_default_first():
    """A twin option value the Flax model cannot take, or a default for configs older than the key
    that differs from the Flax one, would make the two read one config differently."""
    for key, values in torch_stiv.OPTIONS.items():
        assert set(values) <= set(config.CHOICES[key]), key
        assert all(values[0] == get_model_config(size)[key] for size in config.SIZES), key


def test_joint_attention_is_refused_by_the_twin_itself():
    """The bug of issue 23: the twin ignored ``attention_layout`` and built the factorised model
    for a 'joint' config (whose weights load with matching shapes)."""
    joint = resolve(get_model_config("tiny", attention_layout="joint", temporal_attention=False))
    with pytest.raises(ValueError, match=r"attention_layout='joint' \(implemented: factorised\)"):
        torch_stiv.STIV(joint.to_dict())


# -------------------------------------------------------------------------------- constants


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def constant_mismatches() -> list[str]:
    """Names of the twin's copied constants that differ from the Flax originals."""
    pairs = {
        "NUM_MODULATIONS": (torch_stiv.NUM_MODULATIONS, conditioning.NUM_MODULATIONS),
        "X_PRED_MIN_GAP": (torch_stiv.X_PRED_MIN_GAP, interpolant.X_PRED_MIN_GAP),
        "X_PRED_MIN_GAP as used": (torch_stiv.X_PRED_MIN_GAP, _defaults(interpolant.velocity_from_data)["min_gap"]),
        "POS_EMBED_THETA": (torch_stiv.POS_EMBED_THETA, posembed.POS_EMBED_THETA),
        "sinusoidal_embedding defaults": (
            _defaults(torch_stiv.sinusoidal_embedding),
            _defaults(layers.sinusoidal_embedding),
        ),
    }
    return [name for name, (twin, flax) in pairs.items() if twin != flax]


def test_copied_constants_equal_the_flax_originals(monkeypatch):
    assert constant_mismatches() == []
    monkeypatch.setattr(torch_stiv, "X_PRED_MIN_GAP", 0.1)  # the check can fail
    monkeypatch.setattr(torch_stiv, "NUM_MODULATIONS", 9)
    assert constant_mismatches() == ["NUM_MODULATIONS", "X_PRED_MIN_GAP", "X_PRED_MIN_GAP as used"]
