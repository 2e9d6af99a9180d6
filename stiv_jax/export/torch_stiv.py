"""The STIV diffusion transformer in PyTorch (a port of stiv_jax/model for PyTorch users).

Self-contained: imports only torch, numpy, json and safetensors, so this file can be copied into
a PyTorch code base on its own. It computes the same function as the Flax model (parity tested to
1e-4 relative error in float32, tests/test_export_torch.py)::

    model = load_torch_stiv("stiv.safetensors")  # + stiv.json beside it (stiv-export-torch)
    v = model(x, t, text=text, text_mask=text_mask, pooled_text=pooled, micro=micro,
              cond_mask=cond_mask)                 # velocity [B, T, H, W, C], float32

Same config (the Flax model ConfigDict as a dict), same tensors (channels-last latents
``[B, T, H, W, C]``, ``t`` in [0, 1] with 1 = data, ``cond_mask [B, T]`` True = clean replaced
frame, optional MaskDiT ``keep_idx [B, K]``); a config key or option value this port does not
implement is refused (:func:`unsupported`), never ignored. Architecture (paper §2, Fig. 3):
cubify [+ the optional sin-cos position table, ``pos_embed``] → singleton condition + shared
AdaLN → STIV blocks (spatial attn with 2D RoPE, temporal attn with 1D RoPE, cross-attn to
text, MLP; QK RMSNorm; sandwich norms) → [MaskDiT decoder blocks] → modulated LN → un-cubify
[→ velocity from the clean-latent prediction, ``prediction='x'``]. The image path (T = 1) sums the temporal patch
kernel on the way in and averages it on the way out.

Precision follows the Flax model: the residual stream, LayerNorms, RMSNorms, RoPE, the singleton
condition, the AdaLN and the output layer run in float32; every other matmul runs in the
parameters' dtype (``model.to(torch.bfloat16)`` gives Flax's ``dtype="bfloat16"`` compute).

State-dict layout (stiv_jax/export/convert.py maps Flax params onto it): Linear ``weight`` is
``(out, in)``; ``patch_embed`` is an ``nn.Conv3d``; ``unpatchify.weight`` has the
``ConvTranspose3d`` layout ``(d, C, pt, p, p)`` with one bias per in-patch position ``(C, p, p)``;
layers are ``blocks.{i}.…`` / ``decoder_blocks.{i}.…``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Copies of Flax-side constants (checked equal by tests/test_torch_twin_contract.py).
NUM_MODULATIONS = 6  # shift/scale/gate for spatial attention and for the MLP (model/conditioning.py)
X_PRED_MIN_GAP = 0.05  # prediction='x': v = (x̂1 − x_t) / max(1 − t, this) (stiv_jax/flow/interpolant.py)
CONFIG_KEYS = (  # read as they are
    "num_layers", "hidden_size", "num_heads", "mlp_ratio", "in_channels", "patch_size",
    "temporal_patch_size", "text_dim", "freq_dim", "num_micro_conditions", "temporal_attention",
    "cond_indicator", "rope_theta", "rope_ref_grid", "num_decoder_blocks", "ln_eps",
)  # fmt: skip
# Option-valued keys: the values implemented (the first is the default of configs older than the
# key). Other values of model/config.py CHOICES are refused: 'joint' (3D attention) is not ported.
OPTIONS = {"attention_layout": ("factorised",), "pos_embed": ("none", "sincos"), "prediction": ("v", "x")}
# Keys that do not change the function computed, ignored here; any other key is refused.
NON_ARCHITECTURAL_KEYS = {
    "size": "a preset name; num_layers, hidden_size and num_heads carry the shape",
    "dtype": "compute dtype: here the parameters' dtype (model.to(torch.bfloat16))",
    "param_dtype": "storage dtype: load_torch_stiv keeps the file's, or dtype=",
    "remat_policy": "what the backward pass recomputes; the forward is the same",
    "scan_layers": "lax.scan or a Python loop over the same blocks",
    "attention_impl": "XLA, cuDNN or splash kernel for the same attention (SDPA here)",
}

Rope = tuple[torch.Tensor, torch.Tensor]


def unknown_keys(keys) -> list[str]:
    """The config keys in none of ``CONFIG_KEYS``, ``OPTIONS`` and ``NON_ARCHITECTURAL_KEYS``."""
    return sorted(set(keys) - {*CONFIG_KEYS, *OPTIONS, *NON_ARCHITECTURAL_KEYS})


def unsupported(cfg: Mapping[str, Any]) -> list[str]:
    """Why this module cannot compute ``cfg``'s model: unknown keys, unimplemented option values."""
    bad = [f"{k}={cfg[k]!r} (implemented: {', '.join(v)})" for k, v in OPTIONS.items() if cfg.get(k, v[0]) not in v]
    return [f"unknown key {k!r}" for k in unknown_keys(cfg)] + bad


def config_dict(config: Any) -> dict:
    """Plain dict from a dict or an ``ml_collections.ConfigDict``, option defaults filled in;
    ``ValueError`` naming any missing key, unknown key or unimplemented option value."""
    cfg = {k: v[0] for k, v in OPTIONS.items()} | dict(config.to_dict() if hasattr(config, "to_dict") else config)
    missing = [k for k in CONFIG_KEYS if cfg.get(k) is None]  # None: a size-derived key unresolved
    if missing:
        raise ValueError(f"STIV config is missing keys {missing}")
    if problems := unsupported(cfg):
        raise ValueError("STIV config not implemented by this PyTorch port (newer stiv_jax?): " + "; ".join(problems))
    return cfg


# ----------------------------------------------------------------------------- small operations


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Stateless LayerNorm (no affine) in float32, returned in ``x.dtype``."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def sinusoidal_embedding(x: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """``[...] -> [..., dim]`` features ``[cos(x·f), sin(x·f)]``, geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Linear(nn.Linear):
    """``nn.Linear`` that casts its input to the weight dtype (or to float32 if ``float32``)."""

    def __init__(self, din: int, dout: int, bias: bool = True, float32: bool = False):
        super().__init__(din, dout, bias=bias)
        self.float32 = float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32:
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias)
        return super().forward(x.to(self.weight.dtype))


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (QK-norm), computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


# ------------------------------------------------------------------------------------------ RoPE


def _positions(n: int, ref: int, device) -> torch.Tensor:
    """``0..n-1``, rescaled by ``ref/n`` when ``n > ref`` (position interpolation, §2.4)."""
    pos = torch.arange(n, dtype=torch.float32, device=device)
    return pos * (ref / n) if n > ref else pos


def _inv_freq(num: int, theta: float, device) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(num, dtype=torch.float32, device=device) / num)


def rope_1d(n: int, head_dim: int, ref: int, theta: float, device=None) -> Rope:
    """``(cos, sin)`` tables ``[n, head_dim]`` for temporal attention."""
    angles = _positions(n, ref, device)[:, None] * _inv_freq(head_dim // 2, theta, device)
    angles = torch.cat([angles, angles], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def rope_2d(h: int, w: int, head_dim: int, ref: tuple[int, int], theta: float, device=None) -> Rope:
    """``(cos, sin)`` tables ``[h·w, head_dim]`` for a row-major grid: the first half of the
    frequencies encode the row, the second half the column."""
    inv = _inv_freq(head_dim // 4, theta, device)
    rows = (_positions(h, ref[0], device)[:, None] * inv).repeat_interleave(w, dim=0)
    cols = (_positions(w, ref[1], device)[:, None] * inv).repeat(h, 1)
    angles = torch.cat([rows, cols, rows, cols], dim=-1)
    return torch.cos(angles), torch.sin(angles)


POS_EMBED_THETA = 100.0  # stiv_jax/model/posembed.py


def sincos_3d(t: int, h: int, w: int, dim: int, ref: tuple[int, int, int], device=None) -> torch.Tensor:
    """The absolute position table ``[t, h·w, dim]`` of ``pos_embed='sincos'``: ``2·(dim // 6)``
    channels of sin then cos per (frame, row, column), the rest zero."""
    per = (dim // 3) // 2 * 2
    freqs = _inv_freq(per // 2, POS_EMBED_THETA, device)
    axes = []
    for n, r in zip((t, h, w), ref):
        angles = _positions(n, r, device)[:, None] * freqs
        axes.append(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))
    table = torch.zeros(t, h, w, dim, device=device)
    table[..., :per] = axes[0][:, None, None]
    table[..., per : 2 * per] = axes[1][None, :, None]
    table[..., 2 * per : 3 * per] = axes[2][None, None, :]
    return table.reshape(t, h * w, dim)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on ``x [..., S, heads, head_dim]`` in float32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


# ------------------------------------------------------------------------------------ attention


class Attention(nn.Module):
    """Q/K/V projections, QK RMSNorm, optional RoPE, SDPA, output projection."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.out = (Linear(dim, dim) for _ in range(4))
        self.q_norm = RMSNorm(self.head_dim, eps)
        self.k_norm = RMSNorm(self.head_dim, eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        rope: Rope | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [..., S, d]`` (leading dims fold into the batch); ``mask [N, 1, 1, L]`` True = attend."""
        context = x if context is None else context
        q = self.q_norm(self._heads(self.q(x)))
        k = self.k_norm(self._heads(self.k(context)))
        v = self._heads(self.v(context))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        lead = q.shape[:-3]
        q, k, v = (a.reshape(-1, *a.shape[-3:]).transpose(1, 2) for a in (q, k, v))  # [N, H, S, D]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if mask is not None:
            # A query that may see no key (an all-padding prompt): jax.nn.dot_product_attention
            # averages the values uniformly, SDPA returns zeros. Keep the Flax semantics.
            o = torch.where(mask.any(-1, keepdim=True), o, v.mean(-2, keepdim=True))
        return self.out(o.transpose(1, 2).reshape(*lead, o.shape[-2], -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = Linear(dim, hidden), Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class STIVBlock(nn.Module):
    """Spatial attn (modulated, sandwich norm) → temporal attn (sandwich norm) → cross-attn → MLP."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        d, heads, eps = cfg["hidden_size"], cfg["num_heads"], cfg["ln_eps"]
        self.eps = eps
        self.spatial_attn = Attention(d, heads, eps)
        self.temporal_attn = Attention(d, heads, eps) if cfg["temporal_attention"] else None
        self.cross_attn = Attention(d, heads, eps)
        self.mlp = MLP(d, int(d * cfg["mlp_ratio"]))
        self.modulation = nn.Parameter(torch.zeros(NUM_MODULATIONS, d))  # per-block AdaLN offsets

    def forward(
        self,
        x: torch.Tensor,
        mod: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        spatial_rope: Rope,
        temporal_rope: Rope,
    ) -> torch.Tensor:
        """``x [B, T', S, d]`` float32, ``mod [B, 6, d]``, ``text [B, L, d]``, ``text_mask [B, L]``."""
        b, tt, s, d = x.shape
        ln = lambda a: layer_norm(a, self.eps)
        m = (mod + self.modulation[None]).float()[:, :, None, None, :]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = m.unbind(1)

        h = self.spatial_attn(modulate(ln(x), shift_a, scale_a), rope=spatial_rope)
        x = x + gate_a * ln(h)

        if self.temporal_attn is not None and tt > 1:
            h = self.temporal_attn(ln(x).transpose(1, 2), rope=temporal_rope)  # over frames
            x = x + ln(h).transpose(1, 2)

        h = self.cross_attn(ln(x).reshape(b, tt * s, d), text, mask=text_mask[:, None, None, :])
        x = x + h.reshape(b, tt, s, d)

        h = self.mlp(modulate(ln(x), shift_m, scale_m))
        return (x + gate_m * ln(h)).float()


# ---------------------------------------------------------------------- embedders and output


class PatchEmbed(nn.Conv3d):
    """Cubify ``[B, T, H, W, C] -> [B, T', H/p, W/p, d]`` (stride = kernel); an image (T = 1)
    uses the kernel summed over time, i.e. the token of the static video (App. B)."""

    def __init__(self, channels: int, dim: int, patch: int, temporal_patch: int):
        super().__init__(
            channels, dim, kernel_size=(temporal_patch, patch, patch), stride=(temporal_patch, patch, patch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, t, h, w, c = x.shape
        pt, p = self.kernel_size[0], self.kernel_size[1]
        if c != self.in_channels:
            raise ValueError(f"latents have {c} channels, model expects {self.in_channels}")
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} not divisible by patch {p}")
        weight = self.weight
        if t == 1:
            weight = weight.sum(2, keepdim=True)
        elif t % pt:
            raise ValueError(
                f"{t} latent frames: video length must be a multiple of temporal patch {pt} (or 1 for images)"
            )
        y = F.conv3d(x.permute(0, 4, 1, 2, 3).to(weight.dtype), weight, self.bias, stride=(weight.shape[2], p, p))
        return y.permute(0, 2, 3, 4, 1)


class Unpatchify(nn.Module):
    """Un-cubify ``[B, T', h, w, d] -> [B, T, h·p, w·p, C]`` in float32: a ConvTranspose3d with
    stride = kernel plus one bias per position inside the patch; images average the kernel over time."""

    def __init__(self, dim: int, channels: int, patch: int, temporal_patch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, channels, temporal_patch, patch, patch))
        self.bias = nn.Parameter(torch.zeros(channels, patch, patch))

    def forward(self, tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
        _, tt, gh, gw, _ = tokens.shape
        weight = self.weight.float()
        if num_frames == 1:
            weight = weight.mean(2, keepdim=True)
        if tt * weight.shape[2] != num_frames:
            raise ValueError(f"{tt} temporal patches cannot make {num_frames} frames")
        y = F.conv_transpose3d(tokens.float().permute(0, 4, 1, 2, 3), weight, stride=weight.shape[2:])
        y = y + self.bias.float().repeat(1, gh, gw)[:, None]  # [C, 1, H, W]
        return y.permute(0, 2, 3, 4, 1)


class FrameConditionIndicator(nn.Module):
    """Learned embedding of replaced frames (§2.3.1): ``cond_mask [B, T] -> [B, T', 1, d]``."""

    def __init__(self, dim: int, temporal_patch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, temporal_patch))

    def forward(self, cond_mask: torch.Tensor) -> torch.Tensor:
        b, t = cond_mask.shape
        weight = self.weight.float()
        if t == 1:
            weight = weight.sum(1, keepdim=True)
        m = cond_mask.float().reshape(b, t // weight.shape[1], weight.shape[1])
        return F.linear(m, weight)[:, :, None, :]


class EmbedMLP(nn.Module):
    def __init__(self, din: int, dim: int):
        super().__init__()
        self.fc1, self.fc2 = Linear(din, dim, float32=True), Linear(dim, dim, float32=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class SingletonCondition(nn.Module):
    """``c = LN(MLP(sin(1000·t))) + LN(Linear(pooled_text)) + LN(MLP(sin(micro)))`` (§2.1)."""

    def __init__(self, dim: int, text_dim: int, freq_dim: int, num_micro: int, eps: float):
        super().__init__()
        self.freq_dim, self.eps = freq_dim, eps
        self.timestep = EmbedMLP(freq_dim, dim)
        self.pooled_text = Linear(text_dim, dim, float32=True)
        self.micro = EmbedMLP(freq_dim * num_micro, dim)

    def forward(self, t: torch.Tensor, pooled_text: torch.Tensor, micro: torch.Tensor) -> torch.Tensor:
        t_emb = self.timestep(sinusoidal_embedding(1000.0 * t.float(), self.freq_dim))
        m_emb = self.micro(sinusoidal_embedding(micro, self.freq_dim).flatten(1))
        p_emb = self.pooled_text(pooled_text)
        return sum(layer_norm(e, self.eps) for e in (t_emb, p_emb, m_emb))


class SharedAdaLN(nn.Module):
    """SiLU → Linear(d, 6d), shared by all blocks (App. D): ``[B, d] -> [B, 6, d]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = Linear(dim, NUM_MODULATIONS * dim, float32=True)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(c)).unflatten(-1, (NUM_MODULATIONS, -1))


# ------------------------------------------------------------------------------- MaskDiT tokens


def gather_tokens(x: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """``[B, T', S, d] -> [B, T', K, d]``, the same ``keep_idx [B, K]`` positions in every frame."""
    idx = keep_idx.long()[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3])
    return torch.gather(x, 2, idx)


def scatter_tokens(kept: torch.Tensor, keep_idx: torch.Tensor, num_tokens: int, fill: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`gather_tokens`, ``fill [d]`` (the mask token) elsewhere."""
    b, tt, _, d = kept.shape
    full = fill.to(kept.dtype).expand(b, tt, num_tokens, d)
    return full.scatter(2, keep_idx.long()[:, None, :, None].expand(-1, tt, -1, d), kept)


# ------------------------------------------------------------------------------------------ model


def _check_shape(name: str, x: torch.Tensor, shape: tuple) -> None:
    if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {want}")


class STIV(nn.Module):
    """The STIV DiT; ``forward`` mirrors ``stiv_jax.model.dit.STIV.__call__``."""

    def __init__(self, config: Any):
        super().__init__()
        cfg = self.config = config_dict(config)
        d, c = cfg["hidden_size"], cfg["in_channels"]
        p, pt = cfg["patch_size"], cfg["temporal_patch_size"]
        self.head_dim = d // cfg["num_heads"]
        self.pos_embed, self.prediction = cfg["pos_embed"], cfg["prediction"]  # checked by config_dict
        self.patch_embed = PatchEmbed(c, d, p, pt)
        self.cond_indicator = FrameConditionIndicator(d, pt) if cfg["cond_indicator"] else None
        self.condition = SingletonCondition(
            d, cfg["text_dim"], cfg["freq_dim"], cfg["num_micro_conditions"], cfg["ln_eps"]
        )
        self.adaln = SharedAdaLN(d)
        self.text_proj1, self.text_proj2 = Linear(cfg["text_dim"], d), Linear(d, d)
        self.blocks = nn.ModuleList(STIVBlock(cfg) for _ in range(cfg["num_layers"]))
        if cfg["num_decoder_blocks"]:
            self.mask_token = nn.Parameter(torch.zeros(d))
            self.decoder_blocks = nn.ModuleList(STIVBlock(cfg) for _ in range(cfg["num_decoder_blocks"]))
        else:
            self.mask_token = self.decoder_blocks = None
        self.final_modulation = nn.Parameter(torch.zeros(2, d))
        self.unpatchify = Unpatchify(d, c, p, pt)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        pooled_text: torch.Tensor,
        micro: torch.Tensor,
        cond_mask: torch.Tensor | None = None,
        keep_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity ``[B, T, H, W, C]`` (float32) of latents ``x`` at times ``t [B]``."""
        cfg = self.config
        _check_shape("x", x, (None,) * 5)
        b, nf = x.shape[:2]
        _check_shape("t", t, (b,))
        _check_shape("text", text, (b, None, cfg["text_dim"]))
        _check_shape("text_mask", text_mask, tuple(text.shape[:2]))
        _check_shape("pooled_text", pooled_text, (b, cfg["text_dim"]))
        _check_shape("micro", micro, (b, cfg["num_micro_conditions"]))

        tokens = self.patch_embed(x)
        _, tt, gh, gw, d = tokens.shape
        tokens = tokens.reshape(b, tt, gh * gw, d).float()
        if self.pos_embed == "sincos":
            tokens = tokens + sincos_3d(tt, gh, gw, d, tuple(cfg["rope_ref_grid"]), x.device)
        if self.cond_indicator is not None and cond_mask is not None:
            _check_shape("cond_mask", cond_mask, (b, nf))
            tokens = tokens + self.cond_indicator(cond_mask)

        cvec = self.condition(t, pooled_text, micro)
        mod = self.adaln(cvec)
        txt = self.text_proj2(F.gelu(self.text_proj1(text), approximate="tanh"))
        text_mask = text_mask.bool()

        ref_t, ref_h, ref_w = cfg["rope_ref_grid"]
        theta = float(cfg["rope_theta"])
        s_cos, s_sin = rope_2d(gh, gw, self.head_dim, (ref_h, ref_w), theta, x.device)
        t_rope = tuple(a[:, None, :] for a in rope_1d(tt, self.head_dim, ref_t, theta, x.device))
        full_rope = (s_cos[None, None, :, None, :], s_sin[None, None, :, None, :])
        if keep_idx is not None:
            if self.decoder_blocks is None:
                raise ValueError("keep_idx given but the model has no MaskDiT decoder (num_decoder_blocks=0)")
            _check_shape("keep_idx", keep_idx, (b, None))
            tokens = gather_tokens(tokens, keep_idx)
            kept_rope = tuple(a[keep_idx.long()][:, None, :, None, :] for a in (s_cos, s_sin))
        else:
            kept_rope = full_rope

        for block in self.blocks:
            tokens = block(tokens, mod, txt, text_mask, kept_rope, t_rope)
        if self.decoder_blocks is not None:
            if keep_idx is not None:
                tokens = scatter_tokens(tokens, keep_idx, gh * gw, self.mask_token)
            for block in self.decoder_blocks:
                tokens = block(tokens, mod, txt, text_mask, full_rope, t_rope)

        shift, scale = (self.final_modulation[None].float() + cvec[:, None, :]).unbind(1)
        out = modulate(layer_norm(tokens, cfg["ln_eps"]), shift[:, None, None], scale[:, None, None])
        out = self.unpatchify(out.reshape(b, tt, gh, gw, d), nf)
        if self.prediction == "x":  # the output layer predicted the clean latents x̂1
            gap = (1.0 - t.float()).clamp(min=X_PRED_MIN_GAP).reshape(b, 1, 1, 1, 1)
            out = (out - x.float()) / gap
        return out


# ------------------------------------------------------------------------------------ loading


def config_path(weights_path: str | os.PathLike) -> str:
    """The JSON config written beside ``FILE.safetensors``: ``FILE.json``."""
    root, _ = os.path.splitext(os.fspath(weights_path))
    return root + ".json"


def mismatches(want: Mapping[str, tuple], got: Mapping[str, tuple], limit: int = 12) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``got`` (key -> shape) against ``want``, at
    most ``limit`` lines of each kind."""

    def lines(items: list[str]) -> list[str]:
        return items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])

    return (
        lines([f"missing key {k} {want[k]}" for k in sorted(want.keys() - got.keys())])
        + lines([f"unexpected key {k} {got[k]}" for k in sorted(got.keys() - want.keys())])
        + lines(
            [
                f"shape mismatch at {k}: config gives {want[k]}, got {got[k]}"
                for k in sorted(want.keys() & got.keys())
                if want[k] != got[k]
            ]
        )
    )


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raises ``ValueError`` naming every missing, unexpected or mis-shaped key."""
    problems = mismatches(
        {k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if problems:
        raise ValueError(f"{source} does not match its config:\n  " + "\n  ".join(problems))


def load_torch_stiv(
    path: str | os.PathLike, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> STIV:
    """Rebuilds the module from ``FILE.safetensors`` and ``FILE.json`` (written by
    ``stiv-export-torch``); parameters in ``dtype`` (default: as stored), in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_file = config_path(path)
    if not os.path.exists(cfg_file):
        raise FileNotFoundError(f"{cfg_file}: model config missing (expected beside {os.fspath(path)})")
    with open(cfg_file) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_file}: not a JSON model config ({e})") from e
    try:
        state = load_file(os.fspath(path), device=str(device))
    except SafetensorError as e:  # a renamed text file, a truncated download, ...
        raise ValueError(f"{os.fspath(path)}: not a valid safetensors file ({e})") from e
    model = STIV(config)
    check_state_dict(model, state, os.fspath(path))
    stored = {v.dtype for v in state.values()}
    model = model.to(device=device, dtype=dtype or (stored.pop() if len(stored) == 1 else torch.float32))
    model.load_state_dict(state, strict=True)
    return model.eval()
