"""stiv_jax.apps: programs built on the library — the CPU demo (``python -m stiv_jax.apps.demo``),
its report (what each generated video shows) and the probe of a trained run."""
