"""T2V-XL-256: text-to-video, 20 frames at 256², initialised from T2I-XL-256 (Fig. 4).

Paper hyper-parameters are the defaults (stiv_jax/train/config.py: paper_config). Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/t2v_xl_256.py
or on one host:
  stiv-train --config=experiments/t2v_xl_256.py --workdir=gs://BUCKET/t2v_xl_256 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/t2v_xl_256.py --topology=v5e:16x16
"""

from stiv_jax.train.config import paper_config


def get_config():
    c = paper_config("XL", resolution=256, num_frames=20, tasks=dict(t2v=1.0))
    c.init_from.spatial = ""  # e.g. gs://BUCKET/t2i_xl_256 (EMA weights; temporal attention starts as identity)
    return c
