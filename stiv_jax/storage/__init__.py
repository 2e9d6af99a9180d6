"""stiv_jax.storage: the path layer for local folders and ``gs://`` (``paths``), the run directory
(``workdir``), its lock and its checkpoints (``checkpoints``)."""
