"""stiv_jax.cli."""
