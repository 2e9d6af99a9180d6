"""stiv_jax.export: the STIV DiT for PyTorch users.

- ``torch_stiv``: the self-contained PyTorch module and ``load_torch_stiv`` (torch only, no jax);
- ``convert``: Flax ↔ PyTorch parameter conversion and the safetensors + JSON export;
- ``checkpoint``: the params of a training run's latest orbax checkpoint, as numpy.
"""
