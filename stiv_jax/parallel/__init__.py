"""stiv_jax.parallel."""
