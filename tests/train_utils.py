"""Shared set-up for trainer tests: a tiny synthetic-data config and result readers."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from experiments import tiny_synthetic


def tiny_train_config(**overrides):
    c = tiny_synthetic.get_config()
    c.num_train_steps = 40
    c.log_every_steps = 1
    c.checkpoint_every_steps = 1000
    c.async_checkpointing = False
    c.mesh.fsdp = 1
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def losses(workdir: str) -> np.ndarray:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    by_step = {r["step"]: r["loss"] for r in rows if "loss" in r}  # eval rows carry eval/ keys
    return np.array([by_step[s] for s in sorted(by_step)])


def one_device():
    return jax.devices()[:1]


def run(cfg, workdir, **kwargs):
    """``train`` on the first data×fsdp×tensor simulated devices."""
    from stiv_jax.train.loop import train

    n = cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor
    return train(cfg, workdir, devices=jax.devices()[:n], **kwargs)


def demo_tokenizer(folder) -> str:
    """``folder/spm.model``: a SentencePiece model (T5-style ids) of every demo caption."""
    from stiv_jax.apps.report import all_prompts
    from stiv_jax.data import synthetic

    return synthetic.train_sentencepiece(all_prompts(), os.path.join(folder, "spm.model"), vocab_size=64)
