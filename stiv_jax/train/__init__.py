"""stiv_jax.train: the trainer (§2.2–2.3, App. B) — config, data feed, train step, optimizer and
EMA, sharding of the state, the loop, agreed stops, progressive init, AOT compilation."""
