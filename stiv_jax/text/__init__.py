"""stiv_jax.text: the T5 tokenizer and the frozen prompt encoders (CLIP text, T5), in Flax NNX.

Modules: ``tokenizer`` (T5Tokenizer, ``make_tokenizer``), ``clip_tokenizer`` (CLIP BPE), ``clip`` / ``t5`` (the encoders), ``encoder``
(``TextEncoder.encode(ids, mask) -> (tokens, pooled)``, built by ``stiv_jax.encoders.build``), ``convert``
(Hugging Face state dicts → our parameters). Nothing is imported here, so the tokenizer can be
used in data workers without importing JAX.
"""
