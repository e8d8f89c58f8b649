"""Logical axis names of every T5 parameter (train/sharding.py maps them onto a device mesh)."""
from __future__ import annotations

import re

from flax import traverse_util

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
                if "/layers/" in path:  # scanned layout (T5Config.scan_layers): stacked on a leading layer axis
                    axes = ("layers", *axes)
                if len(axes) != value.ndim:
                    raise ValueError(f"param {path!r} has shape {value.shape} but rule {pattern!r} gives {axes}")
                out[path] = axes
                break
        else:
            raise ValueError(f"param {path!r} matches no rule in LOGICAL_AXES_RULES")
    return traverse_util.unflatten_dict(out, sep="/")
