"""stiv_jax.export."""
