"""stiv_jax.sampling."""
