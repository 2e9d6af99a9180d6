"""stiv_jax.vae."""
