"""stiv_jax.flow."""
