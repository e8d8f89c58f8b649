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

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.model.layers import block_class, normal_init, relative_position_bucket, rms_norm
from distill_jax.model.t5_config import PRESETS, T5Config

__all__ = ["PRESETS", "T5", "T5Config", "Stack", "init_cache", "init_params", "shift_right"]

Array = jax.Array


class Stack(nn.Module):
    """Encoder or decoder: blocks sharing one relative-position bias table, then a final norm."""

    config: T5Config
    is_decoder: bool

    def setup(self) -> None:
        c = self.config
        n = c.num_decoder_layers if self.is_decoder else c.num_layers
        self.relpos_bias = self.param("relpos_bias", normal_init(c.d_model ** -0.5),
                                      (c.relative_attention_num_buckets, c.num_heads), jnp.float32)
        if c.scan_layers:
            # The position bias is computed once per stack and broadcast to every layer, as HF shares block 0's.
            self.layers = nn.scan(block_class(c, scanned=True), variable_axes={"params": 0},
                                  split_rngs={"params": True, "dropout": True}, length=n,
                                  in_axes=(1,) + (nn.broadcast,) * 7, out_axes=1)(c, self.is_decoder)
        else:
            self.block = [block_class(c, scanned=False)(c, self.is_decoder) for _ in range(n)]
        self.final_norm = rms_norm(c)
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
        if self.config.scan_layers:
            x, _ = self.layers(x, None, "forward", deterministic, bias, mask, encoder_hidden, cross_mask, None)
        else:
            for block in self.block:
                x = block(x, bias, mask, encoder_hidden, cross_mask, deterministic)
        return self.dropout(self.final_norm(x), deterministic=deterministic)

    def cross_kv(self, encoder_hidden: Array) -> dict:
        """{"block_i": {"k", "v"}} of [B, H, S, d_kv]; scanned, {"k", "v"} of [B, layers, H, S, d_kv]."""
        if self.config.scan_layers:
            return self.layers(encoder_hidden, None, "cross_kv", True, None, None, encoder_hidden, None, None)[1]
        return {f"block_{i}": block.cross_kv(encoder_hidden) for i, block in enumerate(self.block)}

    def step(self, x: Array, position: Array, cache: dict, cross_kv: dict, cross_mask: Array) -> tuple[Array, dict]:
        max_len = cache["k"].shape[3] if self.config.scan_layers else cache["block_0"]["k"].shape[2]
        bias = self.position_bias(jnp.reshape(position, (1,)), jnp.arange(max_len))
        if self.config.scan_layers:
            x, new_cache = self.layers(x, {"cache": cache, "cross_kv": cross_kv}, "step", True, bias, None, None,
                                       cross_mask, position)
            return self.final_norm(x), new_cache
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
        self.shared = nn.Embed(c.vocab_size, c.d_model, embedding_init=normal_init(1.0), dtype=jnp.float32,
                               param_dtype=jnp.float32)
        self.encoder = Stack(c, is_decoder=False)
        self.decoder = Stack(c, is_decoder=True)
        if not c.tie_word_embeddings:
            # float32 accumulation *and* output: bf16 logits would round away the margins between tokens.
            # Fan-in init (t5x's logits layer), not HF's std 1.0: the final norm gives unit-RMS hidden states,
            # so std 1.0 starts a scratch student at logits of std sqrt(d_model) and a loss near 11 instead of
            # ln(vocab); it spends its first ~100 steps unlearning that. Imported checkpoints are unaffected.
            self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=c.compute_dtype, param_dtype=jnp.float32,
                                    kernel_init=normal_init(c.d_model ** -0.5),
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
    """Zeroed self-attention K/V for every decoder layer: {"block_i": {"k", "v"}} of [B, H, max_len, d_kv];
    scanned, {"k", "v"} of [B, layers, H, max_len, d_kv] (batch stays on axis 0 for beam reordering)."""
    shape = (batch, config.num_heads, max_len, config.d_kv)
    if config.scan_layers:
        shape = (batch, config.num_decoder_layers, *shape[1:])
        return {"k": jnp.zeros(shape, config.compute_dtype), "v": jnp.zeros(shape, config.compute_dtype)}
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
