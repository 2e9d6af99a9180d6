"""stiv_jax.flow: flow matching (§2.1) — the interpolant, time distributions, the loss, and the
frame-replacement task table shared by training and sampling (§2.3)."""
