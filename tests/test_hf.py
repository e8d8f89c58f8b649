"""HF directories <-> our params: export loads in transformers, round trips are exact, .bin reads without torch."""
from __future__ import annotations

import copy
import json
import pickle
import shutil
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import traverse_util
from helpers_hf import FAMILIES, make_tiny_hf_t5
from safetensors.numpy import load_file, save_file
from transformers import GenerationConfig, T5ForConditionalGeneration
from transformers import T5Config as HFT5Config

from distill_jax.cli import main as cli_main
from distill_jax.config import ConfigError
from distill_jax.model.hf import load_hf, read_torch_bin, save_hf
from distill_jax.model.t5 import T5

INPUTS = np.array([[5, 17, 33, 120, 1, 0], [9, 44, 1, 0, 0, 0]])
DECODER_INPUTS = np.array([[0, 7, 8, 9], [0, 150, 3, 1]])


@pytest.fixture(scope="module", params=FAMILIES)
def hf_model(request, tmp_path_factory):
    return make_tiny_hf_t5(tmp_path_factory.mktemp("hf"), request.param, seed=3)


def _hf_logits(model: T5ForConditionalGeneration) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(INPUTS), attention_mask=torch.tensor(INPUTS > 0),
                    decoder_input_ids=torch.tensor(DECODER_INPUTS))
    return out.logits.numpy()


def _flat(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def test_export_loads_in_transformers_with_same_logits(hf_model, tmp_path):
    hf_dir, torch_model = hf_model
    config, params = load_hf(hf_dir)
    ours = jax.jit(lambda p: T5(config).apply({"params": p}, INPUTS, INPUTS > 0, DECODER_INPUTS))(params)
    np.testing.assert_allclose(ours, _hf_logits(torch_model), atol=1e-4, rtol=1e-4)

    save_hf(params, config, tmp_path / "export")
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(_hf_logits(reloaded), ours, atol=1e-4, rtol=1e-4)
    assert (reloaded.lm_head.weight is reloaded.shared.weight) == config.tie_word_embeddings
    generation = GenerationConfig.from_pretrained(tmp_path / "export")
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id) == (0, 1, 0)
    written = json.loads((tmp_path / "export" / "config.json").read_text())
    assert written["architectures"] == ["T5ForConditionalGeneration"]


def test_hf_to_ours_to_hf_is_bit_identical(hf_model, tmp_path):
    hf_dir, _ = hf_model
    save_hf(*reversed(load_hf(hf_dir)), tmp_path / "export")
    before = load_file(str(hf_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert sorted(before) == sorted(after)
    for name, value in before.items():
        assert after[name].dtype == value.dtype and np.array_equal(after[name], value), name


def test_pytorch_bin_loads_without_torch_to_identical_params(hf_model, tmp_path):
    hf_dir, torch_model = hf_model
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(hf_dir / "config.json", bin_dir)
    # The old transformers layout: every tensor, tied copies included (encoder/decoder.embed_tokens, lm_head).
    state = torch_model.state_dict()
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    state[q] = state[q].t().contiguous().t()  # same values, column-major storage: exercises the strides
    torch.save(state, bin_dir / "pytorch_model.bin")
    _, from_bin = load_hf(bin_dir)
    _, from_safetensors = load_hf(hf_dir)
    a, b = _flat(from_bin), _flat(from_safetensors)
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name

    raw = read_torch_bin(bin_dir / "pytorch_model.bin")
    bf16 = {"x": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t()}  # non-contiguous, 2-byte dtype
    torch.save(bf16, tmp_path / "bf16.bin")
    np.testing.assert_array_equal(read_torch_bin(tmp_path / "bf16.bin")["x"].astype(np.float32),
                                  bf16["x"].float().numpy())
    assert set(raw) == set(state)


def test_bf16_checkpoint_loads_as_float32(hf_model, tmp_path):
    hf_dir, torch_model = hf_model
    copy.deepcopy(torch_model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    _, from_bf16 = load_hf(tmp_path / "bf16")
    _, from_fp32 = load_hf(hf_dir)
    a, b = _flat(from_bf16), _flat(from_fp32)
    for name in b:
        assert a[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name].astype(ml_dtypes.bfloat16).astype(np.float32), err_msg=name)


def test_untied_config_without_lm_head_uses_the_embedding(tmp_path):
    """transformers 5.x leaves lm_head.weight out of a v1.1 file when it equals shared.weight."""
    config = HFT5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                        feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    assert "lm_head.weight" not in load_file(str(tmp_path / "hf" / "model.safetensors"))
    ours, params = load_hf(tmp_path / "hf")
    assert not ours.tie_word_embeddings
    np.testing.assert_array_equal(params["lm_head"]["kernel"], params["shared"]["embedding"].T)


def test_tied_config_with_a_different_lm_head_is_refused(tmp_path):
    hf_dir, _ = make_tiny_hf_t5(tmp_path, "v1_0")
    weights = str(hf_dir / "model.safetensors")
    tensors = load_file(weights)
    tensors["lm_head.weight"] = tensors["shared.weight"].copy()
    save_file(tensors, weights)
    load_hf(hf_dir)  # an identical copy of the tied head (older checkpoints) is fine
    tensors["lm_head.weight"] += 1
    save_file(tensors, weights)
    with pytest.raises(ConfigError, match="lm_head.weight differs from shared.weight"):
        load_hf(hf_dir)


def test_pytorch_bin_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(ConfigError, match="refusing to unpickle .*print"):
        read_torch_bin(path)


def test_bad_directories_name_the_problem(hf_model, tmp_path):
    hf_dir, _ = hf_model
    with pytest.raises(ConfigError, match="no config.json"):
        load_hf(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(hf_dir, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["encoder.block.1.layer.1.layer_norm.weight"]
    tensors["encoder.final_layer_norm.weight"] = tensors["encoder.final_layer_norm.weight"][:-1]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ConfigError, match="encoder.final_layer_norm.weight' has shape"):
        load_hf(broken)
    tensors["encoder.final_layer_norm.weight"] = np.ones(64, np.float32)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ConfigError, match="encoder.block.1.layer.1.layer_norm.weight' is missing"):
        load_hf(broken)


def test_export_cli_copies_tokenizer_files_and_rejects_unknown_sources(hf_model, tmp_path, capsys):
    hf_dir, torch_model = hf_model
    src = tmp_path / "src"
    shutil.copytree(hf_dir, src)
    (src / "tokenizer_config.json").write_text('{"model_max_length": 512}')
    (src / "spiece.model").write_bytes(b"\x00sentencepiece bytes")
    assert cli_main(["export", "--model", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "exported" in capsys.readouterr().out
    for name in ("tokenizer_config.json", "spiece.model"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    np.testing.assert_allclose(_hf_logits(reloaded), _hf_logits(torch_model), atol=1e-4, rtol=1e-4)

    assert cli_main(["export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    assert "neither a Hugging Face directory" in capsys.readouterr().err
