"""stiv_jax.train."""
