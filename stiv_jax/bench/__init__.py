"""stiv_jax.bench: ``stiv-bench`` — train-step speed against diffusers' Latte, MFU, the sampler, scaling
and remat policies, measured by interleaved runs in one process."""
