"""stiv_jax.data."""
