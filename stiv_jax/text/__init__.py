"""stiv_jax.text."""
