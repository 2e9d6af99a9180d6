"""stiv_jax.export: STIV for PyTorch users.

- ``torch_stiv``: the self-contained PyTorch DiT and ``load_torch_stiv`` (torch only, no jax);
- ``convert``: Flax ↔ PyTorch parameter conversion, the safetensors + JSON export, and
  ``load_run`` (a run's model config and checkpoint params, as numpy);
- ``diffusers_pipeline`` / ``diffusers_parts`` / ``diffusers_tokenizer``: ``STIVPipeline``, a
  diffusers pipeline that samples videos in PyTorch (torch, diffusers, transformers; no jax);
- ``diffusers_export``: a run → a pipeline folder, and a folder → a run (``stiv-import --kind=stiv``).

``from stiv_jax.export import STIVPipeline`` imports the pipeline on first use.
"""


def __getattr__(name: str):
    if name in ("STIVPipeline", "STIVPipelineOutput"):
        from stiv_jax.export import diffusers_pipeline

        return getattr(diffusers_pipeline, name)
    raise AttributeError(f"module 'stiv_jax.export' has no attribute {name!r}")
