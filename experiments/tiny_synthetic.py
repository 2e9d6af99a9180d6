"""Tiny STIV on in-memory synthetic clips: a CPU smoke run of the whole training stack.

Run:
  stiv-train --config=experiments/tiny_synthetic.py --workdir=/tmp/stiv_tiny
"""

from stiv_jax.train.config import base_config


def get_config():
    c = base_config("tiny", in_channels=12, rope_ref_grid=(4, 8, 8))
    c.num_train_steps = 200
    c.batch_size = 8
    c.learning_rate = 1e-3
    c.warmup_steps = 20
    c.checkpoint_every_steps = 100
    c.log_every_steps = 20
    c.mesh.fsdp = -1
    c.optimizer.min_dim_size_to_factor = 32
    c.optimizer.ema_decay = 0.99
    c.text.kind = "embedding"
    c.text.vocab_size = 64
    c.autoencoder.kind = "pixel"
    c.autoencoder.downsample = 2
    c.tasks.t2v = 0.5
    c.tasks.ti2v = 0.5
    c.data.kind = "synthetic"
    c.data.num_frames = 4
    c.data.resolution = 16
    c.data.max_text_length = 8
    c.data.num_workers = 0
    return c
