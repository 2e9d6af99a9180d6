"""STIV-V2V on the demo (App. J.1): video prediction fine-tuned from the demo T2V model.

The demo's clips (4 frames at stride 4) with the first 2 frames given and the text kept; the model
learns how the clip goes on. After `make demo`, `make demo-apps` runs all of it; by hand:
  stiv-train --config=experiments/demo_v2v.py --workdir=outputs/demo-apps/v2v
  stiv-sample --workdir=outputs/demo-apps/v2v --task=predict --video=clip.mp4 --video_stride=4 \
      --predict_frames=2 --prompt='a red circle moving left' --out=continued.mp4
Figures (FVD and predicted frames vs the truth, against T2V and copying the last frame):
docs/applications.md.
"""

import pathlib
import runpy


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    c = runpy.run_path(str(pathlib.Path(__file__).with_name("demo_shapes.py")))["get_fine_tune_config"]()
    c.tasks.predict = 1.0
    c.predict_frames = 2
    # No guidance: the given frames fix the content (as for the upsampler, experiments/demo_tup.py).
    c.sampling.scale = 1.0
    return c
