"""The sampler's option vocabulary: guidance kinds and their model branches, renorm modes, ODE
solvers (paper §2.3.2, §3.4.2, App. A), the low-pass filter of frequency-decoupled guidance. Plain
Python, no JAX, so the PyTorch pipeline (stiv_jax/export/diffusers_pipeline.py) reads the same
tables as ``guidance.py`` and ``ode.py``."""

import math

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


def gaussian_taps(sigma: float) -> list[float]:
    """The normalised taps of a Gaussian of std ``sigma`` (> 0) over offsets −r … r, r = ⌈3σ⌉."""
    radius = math.ceil(3 * sigma)
    taps = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    total = sum(taps)
    return [w / total for w in taps]
