"""The STIV diffusion transformer (§2, Fig. 3).

``STIV(cfg)(x, t, text=, text_mask=, pooled_text=, micro=, cond_mask=, keep_idx=) -> v``:

1. patchify latents ``[B, T, H, W, C]`` into ``[B, T', S, d]`` tokens, add the optional absolute
   position table (``pos_embed``, not in the paper) and the per-frame condition indicator of
   replaced frames (§2.3.1);
2. singleton condition ``c`` (timestep, pooled text, micro-conditions) → shared AdaLN ``[B, 6, d]``;
3. project text tokens (PixArt-α caption embedder: Linear → GELU(tanh) → Linear);
4. (MaskDiT, training) keep ``keep_idx`` spatial tokens in every frame;
5. ``num_layers`` STIV blocks, stacked and run with ``lax.scan`` (one compiled block) under the
   configured remat policy;
6. (MaskDiT) scatter back with a learned mask token and run ``num_decoder_blocks`` full blocks;
7. final modulated LayerNorm and un-patchify to the velocity ``[B, T, H, W, C]`` (float32); with
   ``prediction='x'`` (not in the paper) the output layer predicts the clean latents and the
   velocity follows from them (``flow.interpolant.velocity_from_data``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.flow.interpolant import velocity_from_data
from stiv_jax.model import maskdit
from stiv_jax.model.block import SPATIAL_ATTN, TEMPORAL_ATTN, STIVBlock
from stiv_jax.model.conditioning import SharedAdaLN, SingletonCondition
from stiv_jax.model.config import resolve
from stiv_jax.model.layers import dense, layer_norm, modulate
from stiv_jax.model.patchify import FrameConditionIndicator, PatchEmbed, Unpatchify
from stiv_jax.model.posembed import sincos_3d
from stiv_jax.model.rope import rope_1d, rope_2d, rope_3d
from stiv_jax.model.softmax_attention import ATTENTION_PROBS


def remat_policy(name: str):
    """Maps ``model.remat_policy`` to a ``jax.checkpoint`` policy (``None`` = no remat).

    ``save_self_attn`` is the paper's choice (§3.1: "store only self-attention outputs").
    ``dots`` keeps every matmul output without batch dimensions plus the attention
    probabilities (:data:`ATTENTION_PROBS`) and recomputes the elementwise work: the fastest
    policy on CPU, where memory is ample and elementwise passes are cheap.
    """
    policies = {
        "none": None,
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.save_from_both_policies(
            jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
            jax.checkpoint_policies.save_only_these_names(ATTENTION_PROBS),
        ),
        "save_self_attn": jax.checkpoint_policies.save_only_these_names(SPATIAL_ATTN, TEMPORAL_ATTN),
    }
    return policies[name]


def _stack(make: Callable[[nnx.Rngs], nnx.Module], n: int, rngs: nnx.Rngs) -> nnx.Module:
    """Creates ``n`` modules with their parameters stacked on a leading ``layers`` axis."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(r: nnx.Rngs):
        return make(r)

    return create(rngs)


class STIV(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        cfg = resolve(cfg)
        self.cfg = cfg
        d = cfg.hidden_size
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.head_dim = d // cfg.num_heads
        self.patch_embed = PatchEmbed(
            cfg.in_channels,
            d,
            patch=cfg.patch_size,
            temporal_patch=cfg.temporal_patch_size,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.cond_indicator = (
            FrameConditionIndicator(d, temporal_patch=cfg.temporal_patch_size, param_dtype=param_dtype)
            if cfg.cond_indicator
            else None
        )
        self.condition = SingletonCondition(
            d,
            cfg.text_dim,
            freq_dim=cfg.freq_dim,
            num_micro=cfg.num_micro_conditions,
            eps=cfg.ln_eps,
            rngs=rngs,
            param_dtype=param_dtype,
        )
        self.adaln = SharedAdaLN(d, rngs=rngs, param_dtype=param_dtype)
        self.text_proj1 = dense(
            cfg.text_dim, d, ("text_embed", "embed"), std=0.02, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.text_proj2 = dense(d, d, ("embed", "embed"), std=0.02, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.blocks = _stack(lambda r: STIVBlock(cfg, rngs=r), cfg.num_layers, rngs)
        if cfg.num_decoder_blocks:
            self.mask_token = nnx.Param(
                0.02 * jax.random.normal(rngs.params(), (d,), param_dtype), out_sharding=("embed",)
            )
            self.decoder_blocks = _stack(lambda r: STIVBlock(cfg, rngs=r), cfg.num_decoder_blocks, rngs)
        else:
            self.mask_token = self.decoder_blocks = None
        self.final_modulation = nnx.Param(
            jax.random.normal(rngs.params(), (2, d), param_dtype) / d**0.5, out_sharding=(None, "embed")
        )
        self.unpatchify = Unpatchify(
            d,
            cfg.in_channels,
            patch=cfg.patch_size,
            temporal_patch=cfg.temporal_patch_size,
            rngs=rngs,
            param_dtype=param_dtype,
        )

    def _run_blocks(self, stack: nnx.Module, x: jax.Array, *args) -> jax.Array:
        graphdef, params = nnx.split(stack)

        def layer(h, p):
            return nnx.merge(graphdef, p)(h, *args)

        policy = self.cfg.remat_policy
        if policy != "none":
            layer = jax.checkpoint(layer, policy=remat_policy(policy), prevent_cse=not self.cfg.scan_layers)
        if self.cfg.scan_layers:
            return jax.lax.scan(lambda h, p: (layer(h, p), None), x, params)[0]
        n = jax.tree.leaves(params)[0].shape[0]
        for i in range(n):
            x = layer(x, jax.tree.map(operator.itemgetter(i), params))
        return x

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        text: jax.Array,
        text_mask: jax.Array,
        pooled_text: jax.Array,
        micro: jax.Array,
        cond_mask: jax.Array | None = None,
        keep_idx: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.cfg
        b, nf, h, w, c = x.shape
        chex.assert_shape(t, (b,))
        chex.assert_shape(text, (b, None, cfg.text_dim))
        chex.assert_shape(text_mask, text.shape[:2])
        chex.assert_shape(pooled_text, (b, cfg.text_dim))
        chex.assert_shape(micro, (b, cfg.num_micro_conditions))

        tokens = self.patch_embed(x)  # [B, T', h, w, d]
        _, tt, gh, gw, d = tokens.shape
        tokens = tokens.reshape(b, tt, gh * gw, d).astype(jnp.float32)
        if cfg.pos_embed == "sincos":
            tokens = tokens + jnp.asarray(sincos_3d(tt, gh, gw, d, ref=tuple(cfg.rope_ref_grid)))
        if self.cond_indicator is not None and cond_mask is not None:
            chex.assert_shape(cond_mask, (b, nf))
            tokens = tokens + self.cond_indicator(cond_mask)

        cvec = self.condition(t, pooled_text, micro)
        mod = self.adaln(cvec)
        txt = self.text_proj2(jax.nn.gelu(self.text_proj1(text.astype(self.text_proj1.dtype)), approximate=True))

        ref_t, ref_h, ref_w = cfg.rope_ref_grid
        if cfg.attention_layout == "joint":  # [T', S, hd] tables: every token has its own angles
            tables = rope_3d(tt, gh, gw, self.head_dim, ref=tuple(cfg.rope_ref_grid), theta=cfg.rope_theta)
            tables = tuple(a.reshape(tt, gh * gw, -1) for a in tables)
        else:  # [1, S, hd] tables shared by all frames
            tables = tuple(a[None] for a in rope_2d(gh, gw, self.head_dim, ref=(ref_h, ref_w), theta=cfg.rope_theta))
        s_cos, s_sin = (jnp.asarray(a) for a in tables)
        t_rope = tuple(jnp.asarray(a)[:, None, :] for a in rope_1d(tt, self.head_dim, ref=ref_t, theta=cfg.rope_theta))
        full_rope = (s_cos[None, :, :, None, :], s_sin[None, :, :, None, :])
        if keep_idx is not None:
            chex.assert_rank(keep_idx, 2)
            tokens = maskdit.gather_tokens(tokens, keep_idx)
            kept_rope = tuple(jnp.take(a, keep_idx, axis=1).transpose(1, 0, 2, 3)[..., None, :] for a in (s_cos, s_sin))
        else:
            kept_rope = full_rope

        tokens = self._run_blocks(self.blocks, tokens, mod, txt, text_mask, kept_rope, t_rope)
        if self.decoder_blocks is not None:
            if keep_idx is not None:
                tokens = maskdit.scatter_tokens(tokens, keep_idx, gh * gw, self.mask_token[...])
            tokens = self._run_blocks(self.decoder_blocks, tokens, mod, txt, text_mask, full_rope, t_rope)
        elif keep_idx is not None:
            raise ValueError("keep_idx given but the model has no MaskDiT decoder (num_decoder_blocks=0)")

        shift, scale = (self.final_modulation[...][None] + cvec[:, None, :]).transpose(1, 0, 2)[:, :, None, None, :]
        out = modulate(layer_norm(tokens, cfg.ln_eps), shift, scale)
        out = self.unpatchify(out.reshape(b, tt, gh, gw, d), nf)
        return velocity_from_data(out, x, t) if cfg.prediction == "x" else out


def init_model(cfg, seed: int = 0) -> STIV:
    """Builds a model with freshly initialised parameters."""
    return STIV(cfg, rngs=nnx.Rngs(params=seed))


def abstract_model(cfg) -> STIV:
    """The model with ``ShapeDtypeStruct`` leaves: shapes and logical axes, no allocation."""
    return nnx.eval_shape(lambda: STIV(cfg, rngs=nnx.Rngs(params=0)))
