"""stiv_jax.export: the STIV DiT for PyTorch users.

- ``torch_stiv``: the self-contained PyTorch module and ``load_torch_stiv`` (torch only, no jax);
- ``convert``: Flax ↔ PyTorch parameter conversion, the safetensors + JSON export, and
  ``load_run`` (a run's model config and checkpoint params, as numpy).
"""
