"""Our Flax T5 against transformers' PyTorch T5 on the same weights: outputs, loss, gradients, cached decoding."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from helpers_hf import FAMILIES, make_tiny_hf_t5
from transformers import T5ForConditionalGeneration

from distill_jax.config import ConfigError
from distill_jax.model.hf import config_from_hf, config_to_hf, load_hf, name_pairs, stack_layers, unstack_layers
from distill_jax.model.partitioning import param_logical_axes
from distill_jax.model.t5 import PRESETS, T5, T5Config, init_cache, init_params, shift_right

VOCAB = 200


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs and labels of different lengths: padding in the encoder and -100 in the labels."""
    rng = np.random.default_rng(seed)
    input_lens, label_lens = [11, 6, 9], [8, 3, 6]
    input_ids = np.zeros((3, 11), np.int64)
    labels = np.full((3, 8), -100, np.int64)
    for row, (n, m) in enumerate(zip(input_lens, label_lens)):
        input_ids[row, :n] = rng.integers(2, VOCAB, n)
        input_ids[row, n - 1] = 1
        labels[row, :m] = rng.integers(2, VOCAB, m)
        labels[row, m - 1] = 1
    return {"input_ids": input_ids, "attention_mask": (input_ids > 0).astype(np.int64), "labels": labels}


def _loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean token cross-entropy over labels != -100 (torch's CrossEntropyLoss(ignore_index=-100))."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    valid = labels != -100
    nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * valid) / jnp.sum(valid)


def _build_pair(family: str, tmp_dir) -> dict:
    hf_dir, torch_model = make_tiny_hf_t5(tmp_dir, family, vocab_size=VOCAB)
    config, params = load_hf(hf_dir)
    batch = _batch()
    out = torch_model(**{k: torch.tensor(v) for k, v in batch.items()})
    out.loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in torch_model.named_parameters()}
    torch_model.zero_grad()
    return {"family": family, "config": config, "params": params, "batch": batch, "torch_model": torch_model,
            "hf_out": {k: out[k].detach().numpy() for k in ("loss", "logits", "encoder_last_hidden_state")},
            "hf_grads": grads}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """family -> the HF model, our loaded copy, a batch and HF's outputs and gradients on it (built once)."""
    built: dict[str, dict] = {}

    def get(family: str) -> dict:
        if family not in built:
            built[family] = _build_pair(family, tmp_path_factory.mktemp(family))
        return built[family]

    return get


LAYOUTS = ("unrolled", "scanned")


def _in_layout(pair: dict, layout: str, **overrides) -> tuple[T5Config, dict]:
    """The pair's config and params in `layout` (T5Config.scan_layers), config fields overridden."""
    config = dataclasses.replace(pair["config"], scan_layers=layout == "scanned", **overrides)
    flat = stack_layers(traverse_util.flatten_dict(pair["params"], sep="/"), config)
    return config, traverse_util.unflatten_dict(flat, sep="/")


@functools.partial(jax.jit, static_argnums=0)
def _forward(config: T5Config, params: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    model = T5(config)
    labels = jnp.asarray(batch["labels"])
    logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                         shift_right(labels, config.decoder_start_token_id, config.pad_token_id))
    return logits, _loss(logits, labels)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_matches_hf(pairs, family, layout):
    pair = pairs(family)
    (config, params), batch, ref = _in_layout(pair, layout), pair["batch"], pair["hf_out"]
    assert config.gated == (pair["family"] == "v1_1")
    assert config.tie_word_embeddings == (pair["family"] == "v1_0")
    hf_shifted = pair["torch_model"]._shift_right(torch.tensor(batch["labels"])).numpy()
    np.testing.assert_array_equal(shift_right(jnp.asarray(batch["labels"]), 0), hf_shifted)
    encoded = jax.jit(lambda p, ids, mask: T5(config).apply({"params": p}, ids, mask, method=T5.encode))(
        params, batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(encoded, ref["encoder_last_hidden_state"], atol=1e-4, rtol=1e-4)
    logits, loss = _forward(config, params, batch)
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(loss, ref["loss"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_match_hf(pairs, family, layout):
    pair = pairs(family)
    (config, params), batch = _in_layout(pair, layout), pair["batch"]
    grads = jax.jit(jax.grad(lambda p: _forward(config, p, batch)[1]))(params)
    flat = unstack_layers(traverse_util.flatten_dict(grads, sep="/"), config)
    checked = 0
    for ours, theirs, transposed in name_pairs(config):
        mine = np.asarray(flat[ours]).T if transposed else np.asarray(flat[ours])
        ref = pair["hf_grads"][theirs]
        rel = np.linalg.norm(mine - ref) / max(np.linalg.norm(ref), 1e-12)
        assert rel < 1e-4, f"{ours} <- {theirs}: relative grad error {rel:.2e}"
        checked += 1
    assert checked == len(flat)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_compute_close_to_fp32(pairs, family):
    pair = pairs(family)
    config, params, batch = pair["config"], pair["params"], pair["batch"]
    fp32, _ = _forward(config, params, batch)
    bf16, _ = _forward(dataclasses.replace(config, dtype="bfloat16"), params, batch)
    assert bf16.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    scale = float(jnp.abs(fp32).max())
    assert float(jnp.abs(bf16 - fp32).max()) < 0.05 * scale
    assert float(jnp.abs(bf16 - fp32).max()) > 0  # really computed in bf16


# bf16 caching on one family: the cache dtype does not depend on it.
@pytest.mark.parametrize("family,dtype,layout", [("v1_0", "float32", "unrolled"), ("v1_1", "float32", "unrolled"),
                                                 ("v1_1", "bfloat16", "unrolled"), ("v1_0", "float32", "scanned"),
                                                 ("v1_1", "bfloat16", "scanned")])
def test_cached_decode_step_matches_full_decoder(pairs, family, dtype, layout):
    pair = pairs(family)
    (config, params), batch = _in_layout(pair, layout, dtype=dtype), pair["batch"]
    model = T5(config)
    mask = batch["attention_mask"]
    decoder_ids = shift_right(jnp.asarray(batch["labels"]), config.decoder_start_token_id)
    steps = decoder_ids.shape[1]
    full = _forward(config, params, batch)[0]
    encoded = jax.jit(lambda ids, m: model.apply({"params": params}, ids, m, method=T5.encode))(
        batch["input_ids"], mask)
    cross = jax.jit(lambda e: model.apply({"params": params}, e, method=T5.cross_kv))(encoded)
    cache = init_cache(config, decoder_ids.shape[0], steps + 5)  # unused slots past the end must stay masked
    for leaf in jax.tree.leaves((cache, cross)):
        assert leaf.shape[0] == decoder_ids.shape[0]
    step = jax.jit(lambda tok, pos, cache: model.apply({"params": params}, tok, pos, cache, cross, mask,
                                                      method=T5.decode_step))
    tol = 1e-4 if dtype == "float32" else 2e-2 * float(jnp.abs(full).max())
    for t in range(steps):
        logits, cache = step(decoder_ids[:, t:t + 1], jnp.int32(t), cache)
        np.testing.assert_allclose(logits, full[:, t], atol=tol, rtol=0, err_msg=f"position {t}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("remat", ["minimal", "full"])
def test_remat_gradients_equal_no_remat(pairs, remat, layout):
    pair = pairs("v1_1")
    batch = pair["batch"]
    grads = [jax.jit(jax.grad(lambda p, c=c: _forward(c, p, batch)[1]))(p)
             for c, p in (_in_layout(pair, layout), _in_layout(pair, layout, remat=remat))]
    for path, g in traverse_util.flatten_dict(grads[0], sep="/").items():
        np.testing.assert_allclose(traverse_util.flatten_dict(grads[1], sep="/")[path], g, atol=1e-6, rtol=1e-6,
                                   err_msg=path)


def test_dropout_is_keyed_and_off_when_deterministic(pairs):
    pair = pairs("v1_0")  # dropout sits in the same places in both families
    config = dataclasses.replace(pair["config"], dropout_rate=0.3)
    params, batch = pair["params"], pair["batch"]
    model = T5(config)
    args = (batch["input_ids"], batch["attention_mask"], shift_right(jnp.asarray(batch["labels"]), 0))

    @jax.jit
    def run(key):
        train = model.apply({"params": params}, *args, deterministic=False, rngs={"dropout": key})
        return train, model.apply({"params": params}, *args, deterministic=True)

    # rbg keys: threefry dropout masks compile ~2.5x slower on CPU, and the key kind is not under test.
    key = functools.partial(jax.random.key, impl="rbg")
    (a, eval_logits), (b, _), (again, _) = run(key(1)), run(key(2)), run(key(1))
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(eval_logits, pair["hf_out"]["logits"], atol=1e-4, rtol=1e-4)


def test_init_params_and_logical_axes_cover_every_param():
    config = T5Config.preset("tiny", vocab_size=300, num_layers=1, num_decoder_layers=1)
    params = init_params(config, jax.random.PRNGKey(0))
    axes = param_logical_axes(params)
    pairs = jax.tree.leaves(jax.tree.map(lambda p, a: (p.shape, a), params, axes,
                                         is_leaf=lambda x: isinstance(x, tuple)),
                            is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple))
    assert len(pairs) == len(jax.tree.leaves(params))
    allowed = {"vocab", "embed", "heads_kv", "mlp", "relpos_buckets", "heads"}
    for shape, names in pairs:
        assert len(shape) == len(names) and set(names) <= allowed
    bad = {**params, "extra": {"kernel": jnp.zeros((2, 2))}}
    with pytest.raises(ValueError, match="extra/kernel"):
        param_logical_axes(bad)
    # HF's initialisation scale: embedding std 1, q kernel std (d_model * d_kv) ** -0.5.
    assert abs(float(jnp.std(params["shared"]["embedding"])) - 1.0) < 0.05
    q = params["encoder"]["block_0"]["self_attn"]["q"]["kernel"]
    assert abs(float(jnp.std(q)) * (config.d_model * config.d_kv) ** 0.5 - 1.0) < 0.1


@pytest.mark.parametrize("name", ["t5-small", "flan-t5-small", "flan-t5-large"])
def test_presets_have_hf_shapes(name):
    """Every preset's param shapes equal transformers' for the same config.json (built on the meta device)."""
    from transformers import T5Config as HFConfig

    config = T5Config.preset(name)
    with torch.device("meta"):
        hf_model = T5ForConditionalGeneration(HFConfig(**config_to_hf(config)))
    hf_shapes = {k: tuple(v.shape) for k, v in hf_model.state_dict().items()}
    assert config.scan_layers == (config.num_layers >= 12)
    ours = jax.eval_shape(lambda: unstack_layers(
        traverse_util.flatten_dict(init_params(config, jax.random.PRNGKey(0)), sep="/"), config))
    for path, hf_name, transposed in name_pairs(config):
        shape = ours.pop(path).shape
        assert (shape[::-1] if transposed else shape) == hf_shapes[hf_name], path
    assert not ours
    assert config.vocab_size == 32128


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="gelu")
    with pytest.raises(ConfigError, match="unknown"):
        T5Config.preset("t5-huge")
    tiny = T5Config.preset("tiny", vocab_size=512)
    assert (tiny.d_model, tiny.num_heads, tiny.d_kv, tiny.d_ff, tiny.num_layers, tiny.vocab_size) == (
        128, 4, 32, 512, 3, 512)
    for config in PRESETS.values():
        assert config_from_hf(config_to_hf(config)) == dataclasses.replace(config, scan_layers=False)  # HF: no layout
