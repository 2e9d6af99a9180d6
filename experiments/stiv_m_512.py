"""STIV-M-512: the 8.7B T2V+TI2V model at 512² (Tables 4, 10), initialised from T2V-M-512; JIT-CFG at sampling.

Paper hyper-parameters are the defaults (stiv_jax/train/config.py: paper_config). Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/stiv_m_512.py
or on one host:
  stiv-train --config=experiments/stiv_m_512.py --workdir=gs://BUCKET/stiv_m_512 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/stiv_m_512.py --topology=v5e:16x16
"""

from stiv_jax.train.config import fit_16gib_chips, paper_config


def get_config():
    c = paper_config("M", resolution=512, num_frames=20, tasks=dict(ti2v=1.0))
    fit_16gib_chips(c)  # 1024 clips as 4 micro-batches, splash attention, full remat (13.65 GiB/chip)
    c.init_from.spatial = ""  # e.g. gs://BUCKET/t2v_m_512
    c.init_from.temporal = ""  # same run
    return c
