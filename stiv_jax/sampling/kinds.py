"""The sampler's option vocabulary: guidance kinds and their model branches, renorm modes, ODE
solvers (paper §2.3.2, §3.4.2, App. A). Plain Python, no JAX, so the PyTorch pipeline
(stiv_jax/export/diffusers_pipeline.py) reads the same tables as ``guidance.py`` and ``ode.py``."""

GUIDANCE_KINDS = ("none", "cfg", "jit", "sit")
RENORM_MODES = ("none", "rescale", "clip")
SOLVERS = ("euler", "heun")

# Branches as (with_text, with_image); the first is always the fully conditional F(cT, cI).
GUIDANCE_BRANCHES = {
    "none": ((True, True),),
    "cfg": ((True, True), (False, True)),
    "jit": ((True, True), (False, False)),
    "sit": ((True, True), (False, True), (False, False)),
}
