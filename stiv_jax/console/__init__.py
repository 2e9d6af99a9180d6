"""stiv_jax.console: how the console scripts talk to users — one-line errors with exit status 2
(``errors``) and absl flag parsing with ``--verbose`` (``flag_utils``) — and set up their process
(``host_memory``: glibc settings for XLA on CPU)."""
