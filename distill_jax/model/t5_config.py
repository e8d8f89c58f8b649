"""T5Config: the fields of a HF T5 config.json that change the computation, plus the compute dtype; presets.

HF config.json <-> T5Config lives in model/hf.py (`config_from_hf`, `config_to_hf`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax.numpy as jnp

from distill_jax.config import ConfigError


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
    # One block body under nn.scan per stack, params stacked on a leading layer axis: compile time stops
    # growing with depth. A different param layout (model/hf.py converts to and from HF's per-block names).
    scan_layers: bool = False
    # Rematerialisation of each block in the backward pass: "minimal" saves only the matmul outputs without
    # batch dims (the weights' own products, as t5x's configs do), "full" saves nothing.
    remat: Literal["none", "minimal", "full"] = "none"

    def __post_init__(self) -> None:
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ConfigError(f"feed_forward_proj: {self.feed_forward_proj!r} is not 'relu' or 'gated-gelu'")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype: {self.dtype!r} is not 'float32' or 'bfloat16'")
        if self.remat not in ("none", "minimal", "full"):
            raise ConfigError(f"remat: {self.remat!r} is not 'none', 'minimal' or 'full'")
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
    def preset(cls, name: str, **overrides: Any) -> "T5Config":
        if name not in PRESETS:
            raise ConfigError(f"model preset {name!r} is unknown (known: {', '.join(PRESETS)})")
        return dataclasses.replace(PRESETS[name], **overrides)



def _v1_0(d_model: int, d_ff: int, layers: int, heads: int) -> T5Config:
    return T5Config(d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers, num_decoder_layers=layers,
                    num_heads=heads, scan_layers=layers >= 12)


def _flan(d_model: int, d_ff: int, layers: int, heads: int) -> T5Config:
    return T5Config(d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers, num_decoder_layers=layers,
                    num_heads=heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    scan_layers=layers >= 12)


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
