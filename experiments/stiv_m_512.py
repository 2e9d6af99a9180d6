"""STIV-M-512: the 8.7B T2V+TI2V model at 512² (Tables 4, 10), initialised from T2V-M-512;
JIT-CFG at sampling. Fits 16 GiB v5e chips (docs/training.md "Memory on TPU").

Run on a pod:
  python3 launch_tpu/launch.py up --accelerator-type=v5litepod-256 --config=experiments/stiv_m_512.py
or on one host:
  stiv-train --config=experiments/stiv_m_512.py --workdir=gs://BUCKET/stiv_m_512 --config.data.path=gs://BUCKET/latents
Check memory first: stiv-aot --config=experiments/stiv_m_512.py --topology=v5e:16x16
Same run as --config=experiments/paper.py:stage=stiv,size=M,res=512 (the values are there).
"""

import pathlib
import runpy

ARG = "stage=stiv,size=M,res=512"


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    paper = runpy.run_path(str(pathlib.Path(__file__).with_name("paper.py")))
    return paper["get_config"](ARG)
