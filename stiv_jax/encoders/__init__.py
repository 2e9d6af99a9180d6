"""stiv_jax.encoders: the frozen encoders as the trainer and the sampler use them (paper §3.1).

``build`` is the one builder of text encoders and autoencoders from a config section; ``pretrained``
reads and writes ``stiv-import`` directories; ``conditioner`` turns a batch into model inputs.
"""
