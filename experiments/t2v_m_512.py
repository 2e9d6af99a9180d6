"""T2V-M-512: the 8.7B text-to-video model at 512², 20 frames (§3.1; Tables 9–10), initialised
from T2I-M-512 (all but temporal attention) and T2V-M-256 (temporal attention), RoPE
interpolated from the 256² grid (§2.4, Fig. 4). Fits 16 GiB v5e chips (docs/training.md "Memory on TPU").

Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/t2v_m_512.py
or on one host:
  stiv-train --config=experiments/t2v_m_512.py --workdir=gs://BUCKET/t2v_m_512 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/t2v_m_512.py --topology=v5e:16x16
Same run as --config=experiments/paper.py:stage=t2v,size=M,res=512 (the values are there).
"""

import pathlib
import runpy

ARG = "stage=t2v,size=M,res=512"


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    paper = runpy.run_path(str(pathlib.Path(__file__).with_name("paper.py")))
    return paper["get_config"](ARG)
