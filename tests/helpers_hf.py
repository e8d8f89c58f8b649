"""Tiny Hugging Face (PyTorch) T5 models saved to disk: the reference side of the parity tests.

Imported by several test modules; needs torch (the `test` extra).
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

FAMILIES = ("v1_0", "v1_1")


def make_tiny_hf_t5(tmp_dir: str | Path, family: str = "v1_0", seed: int = 0, vocab_size: int = 200,
                    d_model: int = 64, num_layers: int = 2, num_heads: int = 4,
                    ) -> tuple[Path, T5ForConditionalGeneration]:
    """Build, save (save_pretrained, safetensors) and return (directory, model in eval mode).

    v1_0: relu FF, tied head (the d_model**-0.5 scale). v1_1: gated-gelu FF and an lm_head of its own.
    Layer-norm weights are drawn around 1 instead of HF's all-ones init, so a misplaced norm shows up.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    gated = family == "v1_1"
    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=d_model // num_heads, d_ff=2 * d_model,
        num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,  # short inputs reach the log buckets
        feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=not gated,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
        if gated:
            # transformers 5.x ties lm_head to shared unless they differ: give the head its own weights.
            model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab_size, d_model) * d_model ** -0.5)
    model.eval()
    out = Path(tmp_dir) / f"hf_{family}_{seed}"
    model.save_pretrained(out)
    return out, model
