"""T2V-M-512: the 8.7B text-to-video model at 512², 20 frames (§3.1; Tables 9–10). High-res T2V is initialised from high-res T2I (everything but temporal attention) plus low-res T2V (temporal attention), with RoPE interpolated from the 256² token grid (§2.4, Fig. 4).

Paper hyper-parameters are the defaults (stiv_jax/train/config.py: paper_config). Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/t2v_m_512.py
or on one host:
  stiv-train --config=experiments/t2v_m_512.py --workdir=gs://BUCKET/t2v_m_512 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/t2v_m_512.py --topology=v5e:16x16
"""

from stiv_jax.train.config import fit_16gib_chips, paper_config


def get_config():
    c = paper_config("M", resolution=512, num_frames=20, tasks=dict(t2v=1.0))
    fit_16gib_chips(c)  # 1024 clips as 4 micro-batches, splash attention, full remat (13.65 GiB/chip)
    c.init_from.spatial = ""  # e.g. gs://BUCKET/t2i_m_512
    c.init_from.temporal = ""  # e.g. gs://BUCKET/t2v_m_256
    return c
