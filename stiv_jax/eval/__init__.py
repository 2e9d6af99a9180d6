"""stiv_jax.eval: how good the videos are — FVD (I3D features), FID (InceptionV3), CLIP score, with
pinned protocols so anyone can reproduce a number (the paper reports FVD and VBench, §3)."""
