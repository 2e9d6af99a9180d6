"""stiv_jax.parallel: the device mesh, logical-axis sharding rules and the processes of a
multi-host run."""
