"""stiv_jax.data: ArrayRecord clip shards (``ingest``, ``shards``), the Grain pipeline with buckets and
micro-conditions (``pipeline``, ``transforms``), the latent cache and the synthetic demo data (§3.3)."""
