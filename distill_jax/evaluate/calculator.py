"""Calculator-aided greedy decoding: the student writes `<<48/2=`, the true value and `>>` are forced in.

Decoding stays jitted: every round decodes all pending rows to the end with the model package's greedy
decoder, given each row's forced decoder prefix; on the host, the first annotation whose written value is
wrong (or missing) is cut after its `=`, the computed value and `>>` appended, and the row goes back with that
longer prefix. Greedy decoding is deterministic, so the re-decoded part up to the cut is what the student
wrote; a row is final once it has no wrong annotation left. Rounds are bounded by the number of annotations
a row corrects (and by `max_rounds`); each round only decodes rows that changed.
Cost (tiny test T5, 64 CoT inputs, 24 new tokens, batch 32, 2 CPU devices, best of 3 after the one extra
compile per bucket): nothing to correct 0.30 s in 1 round vs plain greedy 0.31 s; one wrong annotation per
row 0.63 s in 2 rounds, i.e. each round of corrections costs about one plain decode of the rows it re-decodes.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from distill_jax.model.decode import DEFAULT_BUCKETS, bucket_for, greedy
from distill_jax.reasoning.calculator import first_correction


def generate_with_calculator(params: Any, config: Any, tokenizer: Any, inputs: Sequence[str],
                             max_new_tokens: int, batch_size: int, *, mesh: Any = None,
                             starts: Sequence[str] | None = None, max_rounds: int = 16,
                             stats: dict | None = None) -> list[str]:
    """Greedy outputs with every computable `<<expr=value>>` forced to the right value, in input order.

    `starts` (one text per input) is what each output is forced to begin with, as if the student had written
    it: annotations in it are checked like the student's own. `stats` receives rounds and corrections."""
    if starts is not None and len(starts) != len(inputs):
        raise ValueError(f"starts has {len(starts)} texts for {len(inputs)} inputs")
    encoded = tokenizer.encode_batch(list(inputs))
    limit = max(DEFAULT_BUCKETS)
    encoded = [ids if len(ids) <= limit else ids[: limit - 1] + [tokenizer.eos_id] for ids in encoded]
    prefixes = [tokenizer.encode(s, add_eos=False) if s else [] for s in starts] if starts else [[] for _ in encoded]
    results: list[str | None] = [None] * len(encoded)
    pending = list(range(len(encoded)))
    sharding = NamedSharding(mesh, P("data")) if mesh is not None else None
    if mesh is not None:
        params = jax.device_put(params, NamedSharding(mesh, P()))
    rounds = corrections = 0
    while pending:
        rounds += 1
        by_bucket: dict[int, list[int]] = {}
        for i in pending:
            by_bucket.setdefault(bucket_for(len(encoded[i]), DEFAULT_BUCKETS), []).append(i)
        still = []
        for length, rows_all in sorted(by_bucket.items()):
            for s in range(0, len(rows_all), batch_size):
                rows = rows_all[s: s + batch_size]
                ids = np.full((batch_size, length), tokenizer.pad_id, np.int32)
                mask = np.zeros((batch_size, length), np.int32)
                pre = np.full((batch_size, max_new_tokens), tokenizer.pad_id, np.int32)
                pre_len = np.zeros((batch_size,), np.int32)
                for r, i in enumerate(rows):
                    ids[r, : len(encoded[i])] = encoded[i]
                    mask[r, : len(encoded[i])] = 1
                    p = prefixes[i][:max_new_tokens]
                    pre[r, : len(p)] = p
                    pre_len[r] = len(p)
                arrays = [jnp.asarray(a) for a in (ids, mask, pre, pre_len)]
                if sharding is not None:
                    arrays = [jax.device_put(a, sharding) for a in arrays]
                out = np.asarray(greedy(params, config, arrays[0], arrays[1], max_new_tokens,
                                        prefix_ids=arrays[2], prefix_len=arrays[3]))
                for r, i in enumerate(rows):
                    text = tokenizer.decode(out[r])
                    fix = first_correction(text)
                    if fix is None or rounds >= max_rounds:
                        results[i] = text
                        continue
                    forced = tokenizer.encode(text[: fix.cut] + fix.forced, add_eos=False)
                    if len(forced) > max_new_tokens or forced == prefixes[i]:
                        results[i] = text  # no room left, or the forced text does not tokenize stably
                        continue
                    corrections += 1
                    prefixes[i] = forced
                    still.append(i)
        pending = still
    if stats is not None:
        stats.update(rounds=rounds, corrections=corrections)
    return [r if r is not None else "" for r in results]
