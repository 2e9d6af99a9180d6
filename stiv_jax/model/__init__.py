"""stiv_jax.model."""
