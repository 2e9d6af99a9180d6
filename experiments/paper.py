"""The paper's runs (§3.1, App. B): T2I, T2V and STIV (T2V+TI2V) at size XL, XXL or M, 256² or 512².

  stiv-train --config=experiments/paper.py:stage=t2v,size=M,res=512 --workdir=gs://BUCKET/t2v_m_512 \
      --config.data.path=gs://BUCKET/latents
  stiv-aot --config=experiments/paper.py:stage=stiv,size=M,res=512 --topology=v5e:16x16

``stage=t2i|t2v|stiv,size=XL|XXL|M,res=256|512`` (defaults t2v, XL, 256: the paper's default run,
20 frames at 256²). The named runs (t2i_xl_256, t2v_xl_256, stiv_xl_256, t2v_m_512, stiv_m_512)
are files of their own over this one. Every value below is the paper's unless its comment says
otherwise. Trains from the latent cache (``stiv-encode-shards`` with the VAE and the CLIP-bigG
text encoder); to encode on the fly: ``--config.data.mode=pixels --config.text.kind=clip
--config.text.checkpoint=... --config.autoencoder.checkpoint=...``.
"""

from stiv_jax.errors import ConfigError
from stiv_jax.train.config import base_config

# What each stage trains on (§3.1; progressive recipe, Fig. 4: T2I → T2V → STIV, low-res → high-res).
#          tasks (frame replacement, §2.3)  frames  global batch
STAGES = {
    "t2i": (dict(t2i=1.0), 1, 4096),  # images are videos of one frame; no temporal attention
    "t2v": (dict(t2v=1.0), 20, 1024),
    "stiv": (dict(ti2v=1.0), 20, 1024),  # TI2V + 8% image dropout = one model for T2V and TI2V (Table 4)
}
SIZES = ("XL", "XXL", "M")  # Table 1: blocks × width × heads 28×1152×18, 38×1536×24, 46×3072×48
RESOLUTIONS = (256, 512)
# Initialise from (Fig. 4; §2.4): set both to runs' workdirs (EMA weights are loaded).
#   t2v-256 spatial ← t2i-256 (temporal attention starts as the identity)
#   t2v-512 spatial ← t2i-512, temporal ← t2v-256 (RoPE interpolated from the 256² grid)
#   stiv    spatial and temporal ← the t2v run of the same size and resolution


def parse(arg: str | None) -> tuple[str, str, int]:
    """``"stage=t2v,size=M,res=512"`` (big_vision's ``get_config(arg)`` form) → ``(stage, size, res)``."""
    given = dict(stage="t2v", size="XL", res="256")
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in given:
            raise ConfigError(f"experiments/paper.py:{arg}: expected stage=..,size=..,res=.., got {item!r}")
        given[key.strip()] = value.strip()
    stage, size, res = given["stage"].lower(), given["size"].upper(), given["res"]
    if stage not in STAGES or size not in SIZES or res not in {str(r) for r in RESOLUTIONS}:
        raise ConfigError(
            f"experiments/paper.py:{arg}: stage must be one of {sorted(STAGES)}, size one "
            f"of {SIZES}, res one of {RESOLUTIONS}"
        )
    return stage, size, int(res)


def get_config(arg: str | None = None):
    stage, size, res = parse(arg)
    tasks, frames, batch = STAGES[stage]
    c = base_config(size, temporal_attention=frames > 1)

    # Optimisation (§3.1 "Training", App. B): AdaFactor, no weight decay, constant lr after warmup.
    c.num_train_steps = 400_000
    c.batch_size = batch
    c.learning_rate = 2e-4
    c.warmup_steps = 1000
    c.lr_decay = "constant"
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.ema_decay = 0.9999

    # Model (Table 1 via size; App. B): MaskDiT keeps 50% of spatial tokens, 2 full-width decoder
    # blocks after unmasking (§2.2); MAE loss weight 0.1 from the MaskDiT code (not in the paper).
    c.mask_ratio = 0.5
    c.mae_loss_weight = 0.1
    c.model.num_decoder_blocks = 2
    c.model.remat_policy = "save_self_attn"  # gradient checkpointing keeps the self-attention outputs
    c.model.rope_ref_grid = (10, 16, 16)  # RoPE positions of 20 frames at 256²; 512² is interpolated (§2.4)

    # Tasks and condition dropout (§2.3, App. B): 8% image, 10% text, independent.
    for name in c.tasks:
        c.tasks[name] = 0.0
    c.tasks.update(tasks)
    c.image_dropout = 0.08
    c.text_dropout = 0.10

    # Data (App. B): 1 of every 3 source frames; latents and text embeddings from the latent cache.
    c.data.num_frames = frames
    c.data.resolution = res
    c.data.frame_strides = (3,)
    c.data.mode = "latents"
    c.text.kind = "cached"

    # Sampling (stiv-sample's defaults for this run): JIT-CFG s = 7.5 for T2V and STIV (App. B);
    # SIT-CFG's best s_img = 1.5 (§3.4.2). Steps and schedule are not in the paper: Movie Gen's
    # linear-quadratic 50 steps emulating 250. CFG-renorm (Table 2's "+ Renorm", a T2I
    # ablation) is --renorm=rescale.
    c.sampling.steps = 50
    c.sampling.schedule = "linear_quadratic"
    c.sampling.emulated_steps = 250
    c.sampling.solver = "euler"
    c.sampling.guidance = "jit"
    c.sampling.scale = 7.5
    c.sampling.image_scale = 1.5
    c.sampling.renorm = "none"

    if size == "M" and res == 512 and stage != "t2i":
        # Not in the paper: fits 16 GiB v5e chips with the paper's batch (docs/training.md "Memory on TPU";
        # stiv-aot --config=experiments/t2v_m_512.py --topology=v5e:16x16). 4 clips per chip with
        # XLA attention and the paper's remat need 40.55 GiB of temporaries; 13.55 GiB per chip
        # (2026-12-02) with 4 micro-batches of 1 clip per chip, splash (flash) attention, which
        # never stores the decoder blocks' 2 GiB-per-clip score matrices, and full remat (only each
        # block's input is kept). Every slice needs these settings: with the paper's remat and one
        # step a v5p-128 asks 164 GiB per chip (of 95.7), and a v6e-64 needs grad_accum_steps=8.
        c.grad_accum_steps = 4
        c.model.attention_impl = "splash"
        c.model.remat_policy = "full"
    return c
