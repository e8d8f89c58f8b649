"""Flax (linen) T5: v1.0 (relu FF, tied head) and v1.1 / Flan-T5 (gated-gelu FF, untied head).

Numerically the same model as transformers' PyTorch `T5ForConditionalGeneration` (tests/test_t5_parity.py):
no 1/sqrt(d_kv) attention scaling; one relative-position bias table per stack, owned by the stack and used
by every layer (HF keeps it in block 0 and passes the bias on); bidirectional buckets in the encoder, causal
in the decoder; RMS norm without mean or bias, computed in float32; gelu_new (tanh) in the gated FF; the
decoder output scaled by d_model**-0.5 only before a tied head.

Params are float32; `T5Config.dtype="bfloat16"` runs the matmuls in bf16 (float32 accumulation) while the
residual stream, norms, softmax and logits stay float32.

Param tree (`params = init_params(config, rng)`), kernels are [in, out]:
    shared/embedding                                  [vocab, d_model]
    lm_head/kernel                                    [d_model, vocab]    (only when not tied)
    encoder/relpos_bias                               [num_buckets, num_heads]
    encoder/block_{i}/self_attn_norm/scale            [d_model]
    encoder/block_{i}/self_attn/{q,k,v}/kernel        [d_model, num_heads * d_kv]
    encoder/block_{i}/self_attn/o/kernel              [num_heads * d_kv, d_model]
    encoder/block_{i}/mlp_norm/scale                  [d_model]
    encoder/block_{i}/mlp/wi/kernel                   [d_model, d_ff]     (relu)
    encoder/block_{i}/mlp/{wi_0,wi_1}/kernel          [d_model, d_ff]     (gated-gelu)
    encoder/block_{i}/mlp/wo/kernel                   [d_ff, d_model]
    encoder/final_norm/scale                          [d_model]
    decoder/...                                       as encoder, plus in every block:
    decoder/block_{i}/cross_attn_norm/scale           [d_model]
    decoder/block_{i}/cross_attn/{q,k,v,o}/kernel     as self_attn

KV-cache decoding (used by model/decode.py):
    cache = init_cache(config, batch, max_len)                       # zeros
    ckv = model.apply({"params": p}, enc, method=T5.cross_kv)        # once per input
    logits, cache = model.apply({"params": p}, token, pos, cache, ckv, enc_mask, method=T5.decode_step)
Every leaf of `cache` and `ckv` is [batch, num_heads, length, d_kv] (batch on axis 0, so beam search reorders
rows with one tree_map).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from distill_jax.config import ConfigError

Array = jax.Array
# Added where attention is not allowed; like HF's finfo.min it underflows to exactly 0 after softmax.
_MASKED = float(jnp.finfo(jnp.float32).min)

_HF_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon",
    "feed_forward_proj", "pad_token_id", "eos_token_id", "decoder_start_token_id",
)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The fields of a HF T5 config.json that change the computation, plus the compute dtype."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: Literal["relu", "gated-gelu"] = "relu"
    tie_word_embeddings: bool = True
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ConfigError(f"feed_forward_proj: {self.feed_forward_proj!r} is not 'relu' or 'gated-gelu'")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype: {self.dtype!r} is not 'float32' or 'bfloat16'")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                     "relative_attention_num_buckets"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate: must be in [0, 1), got {self.dropout_rate}")

    @property
    def compute_dtype(self) -> Any:
        return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"

    @classmethod
    def from_hf(cls, hf: dict[str, Any], dtype: str = "float32") -> "T5Config":
        """From a HF config.json mapping; fields it lacks take T5Config defaults (HF's own defaults)."""
        if hf.get("model_type", "t5") != "t5":
            raise ConfigError(f"model_type: expected 't5', got {hf.get('model_type')!r}")
        kwargs: dict[str, Any] = {k: hf[k] for k in _HF_FIELDS if hf.get(k) is not None}
        # transformers 5.x always ties lm_head to shared unless a checkpoint holds a different lm_head, and
        # keeps the old "tied" meaning for the d_model**-0.5 scale in `scale_decoder_outputs` (its config.json
        # then says tie_word_embeddings=true even for Flan-T5). Older config.json files only have the flag.
        kwargs["tie_word_embeddings"] = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))
        kwargs.setdefault("num_decoder_layers", kwargs.get("num_layers", cls.num_layers))
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id", 0))
        return cls(**kwargs, dtype=dtype)

    def to_hf(self) -> dict[str, Any]:
        """A complete config.json mapping that transformers' T5ForConditionalGeneration loads."""
        out: dict[str, Any] = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}
        out.update({k: getattr(self, k) for k in _HF_FIELDS})
        out.update({
            "tie_word_embeddings": self.tie_word_embeddings,
            "scale_decoder_outputs": self.tie_word_embeddings,
            "dense_act_fn": "gelu_new" if self.gated else "relu",
            "is_gated_act": self.gated,
            "is_encoder_decoder": True,
            "is_decoder": False,
            "classifier_dropout": 0.0,
            "initializer_factor": 1.0,
            "use_cache": True,
            "dtype": "float32",
        })
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "T5Config":
        if name not in PRESETS:
            raise ConfigError(f"model preset {name!r} is unknown (known: {', '.join(PRESETS)})")
        return dataclasses.replace(PRESETS[name], **overrides)


def _v1_0(d_model: int, d_ff: int, layers: int, heads: int) -> T5Config:
    return T5Config(d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers, num_decoder_layers=layers,
                    num_heads=heads)


def _flan(d_model: int, d_ff: int, layers: int, heads: int) -> T5Config:
    return T5Config(d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers, num_decoder_layers=layers,
                    num_heads=heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def _scratch(d_model: int, heads: int, d_kv: int, d_ff: int, layers: int) -> T5Config:
    # From-scratch students train on an unlimited synthetic world: no dropout by default (a training config can
    # set it). vocab_size is a placeholder: set it to len(tokenizer).
    return T5Config(vocab_size=1000, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=layers,
                    num_decoder_layers=layers, num_heads=heads, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False)


PRESETS: dict[str, T5Config] = {
    "t5-small": _v1_0(512, 2048, 6, 8),
    "t5-base": _v1_0(768, 3072, 12, 12),
    "t5-large": _v1_0(1024, 4096, 24, 16),
    "flan-t5-small": _flan(512, 1024, 8, 6),
    "flan-t5-base": _flan(768, 2048, 12, 12),
    "flan-t5-large": _flan(1024, 2816, 24, 16),
    "tiny": _scratch(128, 4, 32, 512, 3),
    "mini": _scratch(256, 4, 64, 1024, 4),
}


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


def _normal(std: float) -> Any:
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


def _norm(config: T5Config) -> RMSNorm:
    return RMSNorm(config.layer_norm_epsilon, config.compute_dtype)


def _dense(config: T5Config, features: int, std: float) -> nn.Dense:
    return nn.Dense(features, use_bias=False, dtype=config.compute_dtype, param_dtype=jnp.float32,
                    kernel_init=_normal(std))


class Attention(nn.Module):
    config: T5Config

    def setup(self) -> None:
        c = self.config
        inner = c.num_heads * c.d_kv
        # HF's init (T5PreTrainedModel._init_weights); q carries the missing 1/sqrt(d_kv).
        self.q = _dense(c, inner, (c.d_model * c.d_kv) ** -0.5)
        self.k = _dense(c, inner, c.d_model ** -0.5)
        self.v = _dense(c, inner, c.d_model ** -0.5)
        self.o = _dense(c, c.d_model, inner ** -0.5)
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
            self.wi_0 = _dense(c, c.d_ff, c.d_model ** -0.5)
            self.wi_1 = _dense(c, c.d_ff, c.d_model ** -0.5)
        else:
            self.wi = _dense(c, c.d_ff, c.d_model ** -0.5)
        self.wo = _dense(c, c.d_model, c.d_ff ** -0.5)
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
        self.self_attn_norm = _norm(c)
        self.self_attn = Attention(c)
        if self.is_decoder:
            self.cross_attn_norm = _norm(c)
            self.cross_attn = Attention(c)
        self.mlp_norm = _norm(c)
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


class Stack(nn.Module):
    """Encoder or decoder: blocks sharing one relative-position bias table, then a final norm."""

    config: T5Config
    is_decoder: bool

    def setup(self) -> None:
        c = self.config
        n = c.num_decoder_layers if self.is_decoder else c.num_layers
        self.relpos_bias = self.param("relpos_bias", _normal(c.d_model ** -0.5),
                                      (c.relative_attention_num_buckets, c.num_heads), jnp.float32)
        self.block = [Block(c, self.is_decoder) for _ in range(n)]
        self.final_norm = _norm(c)
        self.dropout = nn.Dropout(c.dropout_rate)

    def position_bias(self, query_pos: Array, key_pos: Array) -> Array:
        """[1, H, Q, K] float32 bias for query positions [Q] against key positions [K]."""
        c = self.config
        buckets = relative_position_bucket(key_pos[None, :] - query_pos[:, None], not self.is_decoder,
                                           c.relative_attention_num_buckets, c.relative_attention_max_distance)
        return jnp.transpose(jnp.take(self.relpos_bias, buckets, axis=0), (2, 0, 1))[None]

    def __call__(self, x: Array, mask: Array, encoder_hidden: Array | None = None,
                 cross_mask: Array | None = None, deterministic: bool = True) -> Array:
        positions = jnp.arange(x.shape[1])
        bias = self.position_bias(positions, positions)
        x = self.dropout(x, deterministic=deterministic)
        for block in self.block:
            x = block(x, bias, mask, encoder_hidden, cross_mask, deterministic)
        return self.dropout(self.final_norm(x), deterministic=deterministic)

    def cross_kv(self, encoder_hidden: Array) -> dict[str, dict[str, Array]]:
        return {f"block_{i}": block.cross_kv(encoder_hidden) for i, block in enumerate(self.block)}

    def step(self, x: Array, position: Array, cache: dict, cross_kv: dict, cross_mask: Array) -> tuple[Array, dict]:
        max_len = cache["block_0"]["k"].shape[2]
        bias = self.position_bias(jnp.reshape(position, (1,)), jnp.arange(max_len))
        new_cache = {}
        for i, block in enumerate(self.block):
            name = f"block_{i}"
            x, new_cache[name] = block.step(x, position, cache[name], bias, cross_kv[name], cross_mask)
        return self.final_norm(x), new_cache


def _key_mask(mask: Array) -> Array:
    """[B, K] 1/0 padding mask -> bool [B, 1, 1, K]."""
    return (mask > 0)[:, None, None, :]


class T5(nn.Module):
    """T5ForConditionalGeneration. Logits are float32 in every compute dtype."""

    config: T5Config

    def setup(self) -> None:
        c = self.config
        # float32 lookups keep the residual stream float32 in bf16 mode (the Dense layers cast their inputs).
        self.shared = nn.Embed(c.vocab_size, c.d_model, embedding_init=_normal(1.0), dtype=jnp.float32,
                               param_dtype=jnp.float32)
        self.encoder = Stack(c, is_decoder=False)
        self.decoder = Stack(c, is_decoder=True)
        if not c.tie_word_embeddings:
            # float32 accumulation *and* output: bf16 logits would round away the margins between tokens.
            # Fan-in init (t5x's logits layer), not HF's std 1.0: the final norm gives unit-RMS hidden states,
            # so std 1.0 starts a scratch student at logits of std sqrt(d_model) and a loss near 11 instead of
            # ln(vocab); it spends its first ~100 steps unlearning that. Imported checkpoints are unaffected.
            self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=c.compute_dtype, param_dtype=jnp.float32,
                                    kernel_init=_normal(c.d_model ** -0.5),
                                    dot_general=functools.partial(jax.lax.dot_general,
                                                                  preferred_element_type=jnp.float32))

    def _logits(self, hidden: Array) -> Array:
        c = self.config
        if c.tie_word_embeddings:
            hidden = hidden * (c.d_model ** -0.5)
            emb = self.shared.embedding.astype(c.compute_dtype)
            return jnp.einsum("...d,vd->...v", hidden.astype(c.compute_dtype), emb,
                              preferred_element_type=jnp.float32)
        return self.lm_head(hidden)

    def encode(self, input_ids: Array, attention_mask: Array, deterministic: bool = True) -> Array:
        return self.encoder(self.shared(input_ids), _key_mask(attention_mask), deterministic=deterministic)

    def decode(self, decoder_input_ids: Array, encoder_hidden: Array, encoder_mask: Array,
               decoder_attention_mask: Array | None = None, deterministic: bool = True) -> Array:
        t = decoder_input_ids.shape[1]
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
        if decoder_attention_mask is not None:
            mask = mask & _key_mask(decoder_attention_mask)
        hidden = self.decoder(self.shared(decoder_input_ids), mask, encoder_hidden, _key_mask(encoder_mask),
                              deterministic=deterministic)
        return self._logits(hidden)

    def __call__(self, input_ids: Array, attention_mask: Array, decoder_input_ids: Array,
                 decoder_attention_mask: Array | None = None, deterministic: bool = True) -> Array:
        encoder_hidden = self.encode(input_ids, attention_mask, deterministic)
        return self.decode(decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask, deterministic)

    def cross_kv(self, encoder_hidden: Array) -> dict[str, dict[str, Array]]:
        return self.decoder.cross_kv(encoder_hidden)

    def decode_step(self, token: Array, position: Array, cache: dict, cross_kv: dict,
                    encoder_mask: Array) -> tuple[Array, dict]:
        """token [B, 1] at decoder position `position` -> (logits [B, V] float32, updated cache)."""
        hidden, cache = self.decoder.step(self.shared(token), jnp.asarray(position, jnp.int32), cache, cross_kv,
                                          _key_mask(encoder_mask))
        return self._logits(hidden[:, 0]), cache


def init_cache(config: T5Config, batch: int, max_len: int) -> dict[str, dict[str, Array]]:
    """Zeroed self-attention K/V for every decoder layer: {"block_i": {"k", "v"}} of [B, H, max_len, d_kv]."""
    shape = (batch, config.num_heads, max_len, config.d_kv)
    return {f"block_{i}": {"k": jnp.zeros(shape, config.compute_dtype), "v": jnp.zeros(shape, config.compute_dtype)}
            for i in range(config.num_decoder_layers)}


def init_params(config: T5Config, rng: Array) -> dict:
    """Randomly initialised float32 params with HF's initialisation scheme."""
    ids = jnp.ones((1, 1), jnp.int32)
    init = jax.jit(lambda key: T5(config).init({"params": key}, ids, ids, ids)["params"])
    return init(rng)


def shift_right(labels: Array, decoder_start_token_id: int, pad_token_id: int = 0) -> Array:
    """Decoder inputs from labels: start token first, labels moved right by one, -100 (ignored) -> pad."""
    start = jnp.full((labels.shape[0], 1), decoder_start_token_id, labels.dtype)
    shifted = jnp.concatenate([start, labels[:, :-1]], axis=1)
    return jnp.where(shifted == -100, pad_token_id, shifted)


# Ordered: the first rule whose regex matches (re.search) the "/"-joined param path wins.
LOGICAL_AXES_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"^shared/embedding$", ("vocab", "embed")),
    (r"^lm_head/kernel$", ("embed", "vocab")),
    (r"/relpos_bias$", ("relpos_buckets", "heads")),
    (r"_attn/(q|k|v)/kernel$", ("embed", "heads_kv")),
    (r"_attn/o/kernel$", ("heads_kv", "embed")),
    (r"/mlp/wi(_0|_1)?/kernel$", ("embed", "mlp")),
    (r"/mlp/wo/kernel$", ("mlp", "embed")),
    (r"_norm/scale$", ("embed",)),
)


def param_logical_axes(params: dict) -> dict:
    """Same nested-dict structure as `params`, each leaf a tuple of logical axis names (one per dim).

    Tuples are pytrees themselves: map over the result with `is_leaf=lambda x: isinstance(x, tuple)`.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    out = {}
    for path, value in flat.items():
        for pattern, axes in LOGICAL_AXES_RULES:
            if re.search(pattern, path):
                if len(axes) != value.ndim:
                    raise ValueError(f"param {path!r} has shape {value.shape} but rule {pattern!r} gives {axes}")
                out[path] = axes
                break
        else:
            raise ValueError(f"param {path!r} matches no rule in LOGICAL_AXES_RULES")
    return traverse_util.unflatten_dict(out, sep="/")
