"""stiv_jax.sampling: flow-matching samplers for STIV.

schedules (time grids) · ode (Euler/Heun in one ``lax.scan``) · frames (given-frame state rule)
· guidance (cfg / JIT-CFG / SIT-CFG, renorm) · sampler (the jitted core ``sample``) · tasks
(t2i, t2v, ti2v, predict, interpolate, upsample) · long (keyframes + interpolation) · analytic
(exact velocities for tests and benchmarks) · inputs (conditioning images/videos in, uint8 out)
· pipeline (``load_sampler(workdir).generate(...)``: a trained run end to end, for stiv-sample).
"""
