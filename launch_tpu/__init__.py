"""Pod launcher for stiv_jax: `python3 launch_tpu/launch.py --help` (stdlib only, no JAX)."""
