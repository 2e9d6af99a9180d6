"""stiv_jax.weights: pretrained-weight I/O — PyTorch state dicts to Flax parameters (``torch_state``)
and the configs of pretrained parts (``config``). The networks live in ``text/`` and ``vae/``."""
