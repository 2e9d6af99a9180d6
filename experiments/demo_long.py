"""Long video on the demo (§5, App. J): one model trained in its two modes, from the demo T2V run.

The latent cache holds every demo clip twice, 4 frames at stride 3 (keyframes: the span of one
interpolation clip between two of them) and at stride 1 (interpolation), the stride kept as the
micro-condition; the tasks mix T2V and TI2V (the keyframe mode with image-condition dropout) with
interpolation (first and last frames given). `stiv-sample --task=long --frame_stride=1` draws 4
keyframes at stride 3, then 3 interpolation clips at stride 1: 12 frames. After `make demo`,
`make demo-apps` runs all of it; by hand:
  stiv-encode-shards --input=outputs/demo/shards --out=outputs/demo-apps/latents_long --autoencoder=pixel:2:scale=2.96:shift=-0.747 \
      --tokenizer_path=outputs/demo/data/spm.model --max_text_length=16 --num_frames=4 \
      --resolution=24 --frame_strides=1,3 --every_stride --dtype=float32
  stiv-train --config=experiments/demo_long.py --workdir=outputs/demo-apps/long
  stiv-sample --workdir=outputs/demo-apps/long --task=long --prompt='a red circle moving left' --out=long.mp4
Figures (colour, shape and monotonic motion in every frame, vs the demo model untrained for it):
docs/applications.md.
"""

import pathlib
import runpy


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    c = runpy.run_path(str(pathlib.Path(__file__).with_name("demo_shapes.py")))["get_fine_tune_config"]()
    c.tasks.t2v = 0.25
    c.tasks.ti2v = 0.25
    c.tasks.interpolate = 0.5
    c.data.path = "outputs/demo-apps/latents_long"
    c.data.frame_strides = (1, 3)  # interpolation first: the sampler's default small stride
    return c
