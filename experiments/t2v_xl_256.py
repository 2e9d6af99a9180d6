"""T2V-XL-256: text-to-video, 20 frames at 256² (§3.1), initialised from T2I-XL-256 (Fig. 4;
set --config.init_from.spatial to its workdir).

Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/t2v_xl_256.py
or on one host:
  stiv-train --config=experiments/t2v_xl_256.py --workdir=gs://BUCKET/t2v_xl_256 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/t2v_xl_256.py --topology=v5e:16x16
Same run as --config=experiments/paper.py:stage=t2v,size=XL,res=256 (the values are there).
"""

import pathlib
import runpy

ARG = "stage=t2v,size=XL,res=256"


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    paper = runpy.run_path(str(pathlib.Path(__file__).with_name("paper.py")))
    return paper["get_config"](ARG)
