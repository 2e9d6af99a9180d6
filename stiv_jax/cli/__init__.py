"""stiv_jax.cli: the console scripts (``stiv-train``, ``stiv-sample``, …): flags in, library calls,
one line out; errors as one ``stiv-xxx: error:`` line with exit status 2."""
