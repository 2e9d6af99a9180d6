"""The CPU demo: a small STIV learns T2V + TI2V on the embedded moving-shapes dataset.

`make demo` runs everything (data → shards → latent cache → this config → samples). By hand:
  stiv-make-demo-data --out=outputs/demo/data
  stiv-make-shards --input=outputs/demo/data --captions=outputs/demo/data/captions.jsonl --out=outputs/demo/shards
  stiv-encode-shards --input=outputs/demo/shards --out=outputs/demo/latents --autoencoder=pixel:2 \
      --tokenizer_path=outputs/demo/data/spm.model --max_text_length=16 --num_frames=4 \
      --resolution=24 --frame_strides=4 --dtype=float32
  stiv-train --config=experiments/demo_shapes.py --workdir=outputs/demo/workdir

Clips are 4 frames of 24×24 pixels, one of every 4 source frames (the whole 2 s motion), through
the pixel autoencoder (space-to-depth ×2 → 12×12×12 latents; 1×2×2 patches → 4 temporal × 36
spatial tokens of 48 values each), sized so training takes minutes on 2 CPU cores. Each token's
values must fit through the model width 128 (the output layer reproduces the noise it removes):
with the paper's temporal patch 2 a token holds 96 values and the samples stayed speckled; with
patch 1 they are clean at the same cost. The time shift 3 (SD3's resolution shift) trains more at
high noise, where a clip's position, shape and motion are decided: logit-normal(0, 1) alone puts
1.4% of its samples above 90% noise, shift 3 puts 14% there, and the objects then stay coherent
across frames. AdaFactor at 2e-3 with a cosine decay to 0 (the paper's constant 2e-4 suits
400k steps): over the last 400 steps the loss averages 0.055 instead of 0.061 with the constant
1e-3 used before (one run each); prompt following on all 60 captions did not change. Text: a
frozen random embedding of the demo's word-level SentencePiece vocabulary. Tasks: T2V and TI2V
by frame replacement with 8%/10% image/text dropout, so one model does both and JIT-CFG works
(§2.3). Remat 'dots' (keep matmul outputs, recompute the rest) is faster here than no remat, as
every remat policy is on this CPU (less memory traffic): `stiv-bench remat` measured the batch-8
step at 264 ms with 'dots' vs 290 ms without remat (0.91×; peak 99 vs 222 MiB; 2 CPU cores,
2026-11-22). No MaskDiT (mask_ratio 0, no decoder blocks): a
run this short has no budget for the unmasked fine-tuning masked training needs (§2.2).

Position: RoPE as in the paper plus a fixed 3D sin-cos table on the tokens (`pos_embed='sincos'`,
not in the paper). RoPE is relative, so from pure noise a RoPE-only model cannot tell the first
frame from the last nor the centre from a corner. The demo's paths all start at the centre, so
the caption alone gives the direction; with the table the model places frame 0 there and moves
the later frames the way the caption says. One 1600-step run each, all 60 captions: T2V motion
75% and 60% with the table vs 40% without it on the centred data (README ablation table).

Output: x-prediction (`prediction='x'`, not in the paper; Li & He 2025). The output layer
predicts the clean latents x̂1 and the model returns the velocity (x̂1 − x_t)/max(1 − t, 0.05),
so the loss (still on the velocity), the sampler and CFG are unchanged. A width-128 model that
must output the velocity x1 − ε has to carry the noise ε through to its output and drew speckled
blobs; predicting the clean frame it draws the shape. Same data, same 1600 steps: T2V shape 47%
→ 78%, T2V motion 72% → 100% over all 60 captions (README ablation table), though the velocity
loss over the last 400 steps barely moves (0.040 vs 0.042). Those figures are at JIT-CFG s = 7.5;
the demo samples at s = 2 (`stiv_jax/apps/demo.py` SAMPLING), which draws cleaner edges: colour 100%,
T2V shape 88%, T2V motion 98%, TI2V direction and shape 48/48 (fresh clone, 2026-11-23).
"""

from stiv_jax.train.config import base_config


def get_config():
    c = base_config("small", in_channels=12, text_dim=64, temporal_patch_size=1, rope_ref_grid=(4, 6, 6), remat_policy="dots", num_decoder_blocks=0, pos_embed="sincos", prediction="x")
    c.num_train_steps = 1600
    c.batch_size = 8
    c.learning_rate = 2e-3
    c.lr_decay = "cosine"  # --steps=N recomputes the decay for N steps (extending a finished run raises the lr again)
    c.warmup_steps = 50
    c.checkpoint_every_steps = 500
    c.log_every_steps = 25
    c.mesh.fsdp = 1
    c.mask_ratio = 0.0
    c.flow.time_shift = 3.0
    c.optimizer.ema_decay = 0.99
    c.optimizer.min_dim_size_to_factor = 32
    c.tasks.t2v = 0.5
    c.tasks.ti2v = 0.5
    c.text.kind = "embedding"
    c.text.vocab_size = 64
    c.autoencoder.kind = "pixel"
    c.autoencoder.downsample = 2
    c.data.kind = "shards"
    c.data.mode = "latents"
    c.data.path = "outputs/demo/latents"
    c.data.tokenizer_path = "outputs/demo/data/spm.model"
    c.data.num_frames = 4
    c.data.resolution = 24
    c.data.frame_strides = (4,)
    c.data.max_text_length = 16
    c.data.num_workers = 0
    return c
