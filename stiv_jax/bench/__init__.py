"""stiv_jax.bench."""
