"""T2I-XL-256: the text-to-image base model (§3.1; Table 2 ablations). Images are videos with one frame.

Paper hyper-parameters are the defaults (stiv_jax/train/config.py: paper_config). Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/t2i_xl_256.py
or on one host:
  stiv-train --config=experiments/t2i_xl_256.py --workdir=gs://BUCKET/t2i_xl_256 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/t2i_xl_256.py --topology=v5e:16x16
"""

from stiv_jax.train.config import paper_config


def get_config():
    c = paper_config("XL", resolution=256, num_frames=1, tasks=dict(t2i=1.0), batch_size=4096)
    return c
