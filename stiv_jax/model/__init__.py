"""stiv_jax.model: the STIV DiT in Flax NNX (§2.1–2.2): blocks, attention, RoPE, AdaLN conditioning,
MaskDiT, patchify, configs by size, FLOP counts."""
