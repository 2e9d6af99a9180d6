"""Frozen encoders used inside the train step: autoencoder (pixels → latents) and text encoder
(token ids → token embeddings + pooled embedding), plus the null (empty-prompt) text encoding
used for text dropout (App. B).

Their parameters travel as an explicit ``frozen`` argument of the jitted step (never as baked-in
constants) and receive no gradients.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from stiv_jax.encoders.build import build_autoencoder, build_text_encoder
from stiv_jax.errors import ConfigError
from stiv_jax.model.config import resolve
from stiv_jax.text.tokenizer import null_text_ids


class Conditioner:
    """Turns a data batch into model inputs: ``{latents, text, text_mask, pooled_text, micro}``."""

    def __init__(
        self, config: ml_collections.ConfigDict, *, abstract: bool = False, with_autoencoder: bool | None = None
    ):
        """``abstract``: encoders hold ShapeDtypeStructs, nothing allocated (AOT compilation).
        ``with_autoencoder``: build it even for latent-cache runs (the sampler decodes with it);
        by default only pixel-mode training builds one."""
        make = jax.eval_shape if abstract else (lambda f: f())
        self.text_encoder = make(lambda: build_text_encoder(config.text, resolve(config.model).text_dim))
        # Latent-cache training never encodes pixels: no autoencoder is built for it.
        if not (config.data.mode == "pixels" if with_autoencoder is None else with_autoencoder):
            self.autoencoder = None
        elif config.autoencoder.kind == "pixel":  # parameter-free
            self.autoencoder = build_autoencoder(config.autoencoder)
        else:
            self.autoencoder = make(lambda: build_autoencoder(config.autoencoder))
        self.max_length = config.data.max_text_length
        self.tokenizer = config.data.get("tokenizer", "t5")  # whose ids the text encoder reads
        # nnx modules (learned encoders) run from their graph + frozen params inside the step.
        self._text_graph = nnx.split(self.text_encoder, nnx.Param)[0] if self.text_encoder is not None else None
        self._ae_graph = nnx.split(self.autoencoder, nnx.Param)[0] if isinstance(self.autoencoder, nnx.Module) else None

    def frozen_params(self, null_text: dict | None = None) -> dict[str, Any]:
        """Arrays for the ``frozen`` step argument (text-encoder params; cached null text)."""
        frozen: dict[str, Any] = {}
        if self.text_encoder is not None:
            frozen["text"] = nnx.to_pure_dict(nnx.state(self.text_encoder, nnx.Param))
        if self._ae_graph is not None:
            frozen["autoencoder"] = nnx.to_pure_dict(nnx.state(self.autoencoder, nnx.Param))
        if null_text is not None:
            frozen["null_text"] = null_text
        return frozen

    def encode_text(self, frozen: dict, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        encoder = nnx.merge(self._text_graph, frozen["text"])
        tokens, pooled = encoder(ids, mask)
        return jax.lax.stop_gradient(tokens), jax.lax.stop_gradient(pooled)

    def latent_shape(self, batch: dict) -> tuple[int, ...]:
        if "latents" in batch:
            return tuple(batch["latents"].shape)
        b, t, h, w, _ = batch["video"].shape
        f = self.autoencoder.downsample
        return (b, t, h // f, w // f, self.autoencoder.latent_channels)

    def encode_video(self, frozen: dict, video: jax.Array) -> jax.Array:
        ae = self.autoencoder if self._ae_graph is None else nnx.merge(self._ae_graph, frozen["autoencoder"])
        return jax.lax.stop_gradient(ae.encode(video))

    def null_text(self, frozen: dict, length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(tokens [1, L, D], mask [1, L], pooled [1, D])`` of the empty prompt."""
        if "null_text" in frozen:
            n = frozen["null_text"]
            return n["text"], n["text_mask"], n["pooled_text"]
        ids, mask = null_text_ids(length, self.tokenizer)
        tokens, pooled = self.encode_text(frozen, jnp.asarray(ids), jnp.asarray(mask))
        return tokens, jnp.asarray(mask), pooled

    def __call__(self, frozen: dict, batch: dict) -> dict[str, jax.Array]:
        latents = batch["latents"] if "latents" in batch else self.encode_video(frozen, batch["video"])
        if "text_emb" in batch:
            text, pooled = batch["text_emb"], batch["pooled_text"]
        else:
            text, pooled = self.encode_text(frozen, batch["text_ids"], batch["text_mask"])
        return dict(
            latents=jax.lax.stop_gradient(latents.astype(jnp.float32)),
            text=text.astype(jnp.float32),
            text_mask=batch["text_mask"].astype(bool),
            pooled_text=pooled.astype(jnp.float32),
            micro=batch["micro"].astype(jnp.float32),
        )


def check_consistency(config: ml_collections.ConfigDict, conditioner: Conditioner) -> None:
    """Fails fast, naming the keys, when the model and its encoders disagree."""
    m = resolve(config.model)
    ae_ch = getattr(conditioner.autoencoder, "latent_channels", None)
    if config.data.mode == "pixels" and ae_ch is not None and ae_ch != m.in_channels:
        raise ConfigError(
            f"config.model.in_channels={m.in_channels} but the autoencoder ({config.autoencoder.kind}) gives {ae_ch} latent channels"
        )
    enc_dim = getattr(conditioner.text_encoder, "dim", None)
    if enc_dim is not None and enc_dim != m.text_dim:
        raise ConfigError(
            f"config.model.text_dim={m.text_dim} but the text encoder ({config.text.kind}) outputs {enc_dim}"
        )
    # The tokenizer must give ids the encoder reads (e.g. CLIP BPE for public CLIP weights); runs
    # saved before data.tokenizer existed used T5.
    from stiv_jax.text.encoder import TextEncoder
    from stiv_jax.text.tokenizer import check_pairing

    encoder, kind, vocab = conditioner.text_encoder, config.text.kind, None
    if isinstance(encoder, TextEncoder):
        kind, vocab = encoder.kind, int(encoder.model.config.vocab_size)
    elif kind == "embedding":
        vocab = int(config.text.vocab_size)
    check_pairing(config.data.get("tokenizer", "t5"), int(config.data.max_text_length), kind, vocab)
