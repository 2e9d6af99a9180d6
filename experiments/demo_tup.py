"""STIV-TUP on the demo (App. J.2): a temporal upsampler fine-tuned from the demo T2V model.

7-frame clips at stride 2 with every other frame given (0, 2, 4, 6: the 4 frames T2V draws at
stride 4) and the text kept; the model learns the 3 frames in between. Cascaded after T2V it
doubles the demo's frame rate (4 → 7 frames). After `make demo` (which trains
outputs/demo/workdir), `make demo-apps` runs all of it; by hand:
  stiv-encode-shards --input=outputs/demo/shards --out=outputs/demo-apps/latents_tup --autoencoder=pixel:2:scale=2.96:shift=-0.747 \
      --tokenizer_path=outputs/demo/data/spm.model --max_text_length=16 --num_frames=7 \
      --resolution=24 --frame_strides=2 --dtype=float32
  stiv-train --config=experiments/demo_tup.py --workdir=outputs/demo-apps/tup
  stiv-sample --workdir=outputs/demo/workdir --upsample_with=outputs/demo-apps/tup \
      --prompt='a red circle moving left' --out=clip.mp4
Figures (inserted frames vs the true renders, the T2V → TUP cascade): docs/applications.md.
"""

import pathlib
import runpy


def get_config():
    # By path: the stiv-train console script does not put the repository on sys.path.
    c = runpy.run_path(str(pathlib.Path(__file__).with_name("demo_shapes.py")))["get_fine_tune_config"]()
    c.tasks.upsample = 1.0
    c.data.path = "outputs/demo-apps/latents_tup"
    c.data.num_frames = 7
    c.data.frame_strides = (2,)
    # No guidance: the given frames fix the content, and JIT-CFG s = 2 adds texture to the inserted
    # frames (PSNR vs the true frames 28.0 dB at s = 2, 30.4 dB at s = 1; docs/applications.md).
    c.sampling.scale = 1.0
    return c
