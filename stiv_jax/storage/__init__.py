"""Storage: the run directory (``workdir``) and the path layer for local folders and ``gs://``."""
