"""T5's layers: RMS norm, attention (no 1/sqrt(d_kv) scaling), feed-forward, one encoder/decoder block.

See model/t5.py for the model they make up and its numerics.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.model.t5_config import T5Config

Array = jax.Array
# Added where attention is not allowed; like HF's finfo.min it underflows to exactly 0 after softmax.
_MASKED = float(jnp.finfo(jnp.float32).min)

_REMAT_POLICIES = {"minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable, "full": None}


def relative_position_bucket(rel: Array, bidirectional: bool, num_buckets: int, max_distance: int) -> Array:
    """T5's bucket of `rel = key_pos - query_pos`: exact for small distances, log-spaced up to max_distance."""
    buckets = jnp.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).astype(rel.dtype) * num_buckets
        rel = jnp.abs(rel)
    else:
        rel = -jnp.minimum(rel, 0)
    max_exact = num_buckets // 2
    # max(rel, 1) only keeps log finite where the small branch is taken anyway.
    scaled = jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = jnp.minimum(max_exact + (scaled * (num_buckets - max_exact)).astype(rel.dtype), num_buckets - 1)
    return buckets + jnp.where(rel < max_exact, rel, large)


def normal_init(std: float) -> Any:
    return nn.initializers.normal(stddev=std)


class RMSNorm(nn.Module):
    """T5LayerNorm: scale * x / rms(x), in float32, no mean subtraction, no bias."""

    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        return (scale * x).astype(self.dtype)


def rms_norm(config: T5Config) -> RMSNorm:
    return RMSNorm(config.layer_norm_epsilon, config.compute_dtype)


def dense(config: T5Config, features: int, std: float) -> nn.Dense:
    return nn.Dense(features, use_bias=False, dtype=config.compute_dtype, param_dtype=jnp.float32,
                    kernel_init=normal_init(std))


class Attention(nn.Module):
    config: T5Config

    def setup(self) -> None:
        c = self.config
        inner = c.num_heads * c.d_kv
        # HF's init (T5PreTrainedModel._init_weights); q carries the missing 1/sqrt(d_kv).
        self.q = dense(c, inner, (c.d_model * c.d_kv) ** -0.5)
        self.k = dense(c, inner, c.d_model ** -0.5)
        self.v = dense(c, inner, c.d_model ** -0.5)
        self.o = dense(c, c.d_model, inner ** -0.5)
        self.dropout = nn.Dropout(c.dropout_rate)

    def _split(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], self.config.num_heads, self.config.d_kv)

    def project_kv(self, x: Array) -> dict[str, Array]:
        # Heads before length: XLA's CPU dot wants [B, H, K, d_kv]; with [B, K, H, d_kv] the decode loop
        # transposed every cached K/V on every step (measured: ~2x fewer decode tokens/s at batch 128).
        return {"k": jnp.swapaxes(self._split(self.k(x)), 1, 2), "v": jnp.swapaxes(self._split(self.v(x)), 1, 2)}

    def attend(self, x: Array, kv: dict[str, Array], bias: Array | None, mask: Array, deterministic: bool) -> Array:
        """x [B,Q,D] attends to kv [B,H,K,d_kv]; bias [1,H,Q,K] or None; mask bool, broadcastable to [B,H,Q,K]."""
        q = self._split(self.q(x))
        scores = jnp.einsum("bqhd,bhkd->bhqk", q, kv["k"].astype(q.dtype), preferred_element_type=jnp.float32)
        if bias is not None:
            scores = scores + bias
        weights = jax.nn.softmax(jnp.where(mask, scores, _MASKED), axis=-1)
        weights = self.dropout(weights, deterministic=deterministic)
        v = kv["v"].astype(q.dtype)
        out = jnp.einsum("bhqk,bhkd->bqhd", weights.astype(v.dtype), v)
        return self.o(out.reshape(*out.shape[:2], -1))


class MLP(nn.Module):
    config: T5Config

    def setup(self) -> None:
        c = self.config
        if c.gated:
            self.wi_0 = dense(c, c.d_ff, c.d_model ** -0.5)
            self.wi_1 = dense(c, c.d_ff, c.d_model ** -0.5)
        else:
            self.wi = dense(c, c.d_ff, c.d_model ** -0.5)
        self.wo = dense(c, c.d_model, c.d_ff ** -0.5)
        self.dropout = nn.Dropout(c.dropout_rate)

    def __call__(self, x: Array, deterministic: bool) -> Array:
        if self.config.gated:
            h = jax.nn.gelu(self.wi_0(x), approximate=True) * self.wi_1(x)
        else:
            h = jax.nn.relu(self.wi(x))
        return self.wo(self.dropout(h, deterministic=deterministic))


class Block(nn.Module):
    config: T5Config
    is_decoder: bool

    def setup(self) -> None:
        c = self.config
        self.self_attn_norm = rms_norm(c)
        self.self_attn = Attention(c)
        if self.is_decoder:
            self.cross_attn_norm = rms_norm(c)
            self.cross_attn = Attention(c)
        self.mlp_norm = rms_norm(c)
        self.mlp = MLP(c)
        self.dropout = nn.Dropout(c.dropout_rate)

    def _cross_and_mlp(self, x: Array, cross_kv: dict[str, Array] | None, cross_mask: Array | None,
                       deterministic: bool) -> Array:
        if self.is_decoder:
            h = self.cross_attn_norm(x)
            x = x + self.dropout(self.cross_attn.attend(h, cross_kv, None, cross_mask, deterministic),
                                 deterministic=deterministic)
        h = self.mlp_norm(x)
        return x + self.dropout(self.mlp(h, deterministic), deterministic=deterministic)

    def __call__(self, x: Array, bias: Array, mask: Array, encoder_hidden: Array | None, cross_mask: Array | None,
                 deterministic: bool) -> Array:
        h = self.self_attn_norm(x)
        x = x + self.dropout(self.self_attn.attend(h, self.self_attn.project_kv(h), bias, mask, deterministic),
                             deterministic=deterministic)
        cross_kv = self.cross_kv(encoder_hidden) if self.is_decoder else None
        return self._cross_and_mlp(x, cross_kv, cross_mask, deterministic)

    def cross_kv(self, encoder_hidden: Array) -> dict[str, Array]:
        return self.cross_attn.project_kv(encoder_hidden)

    def step(self, x: Array, position: Array, cache: dict[str, Array], bias: Array, cross_kv: dict[str, Array],
             cross_mask: Array) -> tuple[Array, dict[str, Array]]:
        """One decoder position: write this token's K/V into slot `position`, attend to slots <= position."""
        h = self.self_attn_norm(x)
        new = self.self_attn.project_kv(h)
        cache = {name: jax.lax.dynamic_update_slice(cache[name], new[name].astype(cache[name].dtype),
                                                    (0, 0, position, 0)) for name in ("k", "v")}
        mask = (jnp.arange(cache["k"].shape[2]) <= position)[None, None, None, :]
        x = x + self.self_attn.attend(h, cache, bias, mask, True)
        return self._cross_and_mlp(x, cross_kv, cross_mask, True), cache


class ScanBlock(Block):
    """Block as an nn.scan body: carry x; per layer `xs` in (its cache and cross K/V) and out.

    `mode` picks the computation: "forward" (xs None -> None), "cross_kv" (None -> the layer's cross K/V), "step"
    ({"cache", "cross_kv"} -> the updated cache), so one scanned module (one param tree) serves all three.
    """

    def __call__(self, x: Array, xs: Any, mode: str, deterministic: bool, bias: Array | None, mask: Array | None,
                 encoder_hidden: Array | None, cross_mask: Array | None, position: Array | None) -> tuple[Array, Any]:
        if mode == "cross_kv":
            return x, self.cross_kv(encoder_hidden)
        if mode == "step":
            return self.step(x, position, xs["cache"], bias, xs["cross_kv"], cross_mask)
        return Block.__call__(self, x, bias, mask, encoder_hidden, cross_mask, deterministic), None


def block_class(config: T5Config, scanned: bool) -> type[Block]:
    """Block or ScanBlock, wrapped in nn.remat as `config.remat` says (the backward pass recomputes it)."""
    cls = ScanBlock if scanned else Block
    if config.remat == "none":
        return cls
    # static_argnums count self: ScanBlock's (mode, deterministic), Block's deterministic.
    return nn.remat(cls, policy=_REMAT_POLICIES[config.remat], prevent_cse=not scanned,
                    static_argnums=(3, 4) if scanned else (6,))
