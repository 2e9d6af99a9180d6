"""STIV-XL-256: one model for T2V and TI2V (frame replacement + 8% image-condition dropout,
§2.3; Table 4), initialised from T2V-XL-256 (--config.init_from.spatial/temporal).

Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/stiv_xl_256.py
or on one host:
  stiv-train --config=experiments/stiv_xl_256.py --workdir=gs://BUCKET/stiv_xl_256 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/stiv_xl_256.py --topology=v5e:16x16
Same run as --config=experiments/paper.py:stage=stiv,size=XL,res=256 (the values are there).
"""

import pathlib
import runpy

ARG = "stage=stiv,size=XL,res=256"


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    paper = runpy.run_path(str(pathlib.Path(__file__).with_name("paper.py")))
    return paper["get_config"](ARG)
