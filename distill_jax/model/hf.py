"""Hugging Face T5 directories <-> our params, through one name table used in both directions.

`load_hf(dir)` reads config.json and model.safetensors (or pytorch_model.bin, read without torch: it is a zip
of a pickle plus raw storages, unpickled here with a whitelist of four torch globals). `save_hf` writes
config.json, model.safetensors, generation_config.json and, when given, the tokenizer's files: a directory
that transformers' `T5ForConditionalGeneration.from_pretrained` loads (tests/test_hf.py checks the logits).

transformers 5.23 writes only `shared.weight` for the embeddings (encoder/decoder.embed_tokens are tied to it
and left out), and `lm_head.weight` only when it differs from `shared.weight`; an untied (Flan-T5) model
without `lm_head.weight` therefore uses `shared.weight` as its head. We always write `lm_head.weight` for an
untied model so that older transformers versions, which do not fall back to `shared`, load it too.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterator

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from distill_jax.config import ConfigError
from distill_jax.model.t5 import T5Config, init_params

_HF_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon",
    "feed_forward_proj", "pad_token_id", "eos_token_id", "decoder_start_token_id",
)


def config_from_hf(hf: dict[str, Any], dtype: str = "float32") -> T5Config:
    """From a HF config.json mapping; fields it lacks take T5Config defaults (HF's own defaults)."""
    if hf.get("model_type", "t5") != "t5":
        raise ConfigError(f"model_type: expected 't5', got {hf.get('model_type')!r}")
    kwargs: dict[str, Any] = {k: hf[k] for k in _HF_FIELDS if hf.get(k) is not None}
    # transformers 5.x always ties lm_head to shared unless a checkpoint holds a different lm_head, and
    # keeps the old "tied" meaning for the d_model**-0.5 scale in `scale_decoder_outputs` (its config.json
    # then says tie_word_embeddings=true even for Flan-T5). Older config.json files only have the flag.
    kwargs["tie_word_embeddings"] = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))
    kwargs.setdefault("num_decoder_layers", kwargs.get("num_layers", T5Config.num_layers))
    if isinstance(kwargs.get("eos_token_id"), list):
        kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
    kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id", 0))
    return T5Config(**kwargs, dtype=dtype)


def config_to_hf(config: T5Config) -> dict[str, Any]:
    """A complete config.json mapping that transformers' T5ForConditionalGeneration loads."""
    out: dict[str, Any] = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}
    out.update({k: getattr(config, k) for k in _HF_FIELDS})
    out.update({
        "tie_word_embeddings": config.tie_word_embeddings,
        "scale_decoder_outputs": config.tie_word_embeddings,
        "dense_act_fn": "gelu_new" if config.gated else "relu",
        "is_gated_act": config.gated,
        "is_encoder_decoder": True,
        "is_decoder": False,
        "classifier_dropout": 0.0,
        "initializer_factor": 1.0,
        "use_cache": True,
        "dtype": "float32",
    })
    return out

# (our param path, HF tensor name, transposed). HF Linear weights are [out, in], our kernels [in, out].
# Placeholders: {s} stack (encoder|decoder), {i} block index, {p} attention projection (q|k|v|o),
# {w} feed-forward weight (wi | wi_0, wi_1; and wo), {ff} index of the FF layer in a block (1 enc, 2 dec).
NAME_TABLE: tuple[tuple[str, str, bool], ...] = (
    ("shared/embedding", "shared.weight", False),
    ("lm_head/kernel", "lm_head.weight", True),
    ("{s}/relpos_bias", "{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", False),
    ("{s}/final_norm/scale", "{s}.final_layer_norm.weight", False),
    ("{s}/block_{i}/self_attn_norm/scale", "{s}.block.{i}.layer.0.layer_norm.weight", False),
    ("{s}/block_{i}/self_attn/{p}/kernel", "{s}.block.{i}.layer.0.SelfAttention.{p}.weight", True),
    ("decoder/block_{i}/cross_attn_norm/scale", "decoder.block.{i}.layer.1.layer_norm.weight", False),
    ("decoder/block_{i}/cross_attn/{p}/kernel", "decoder.block.{i}.layer.1.EncDecAttention.{p}.weight", True),
    ("{s}/block_{i}/mlp_norm/scale", "{s}.block.{i}.layer.{ff}.layer_norm.weight", False),
    ("{s}/block_{i}/mlp/{w}/kernel", "{s}.block.{i}.layer.{ff}.DenseReluDense.{w}.weight", True),
)

# Tensors a HF checkpoint may hold that carry nothing of their own (tied copies, an unused bias table).
IGNORED_HF_TENSORS = frozenset({
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
})

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _unrolled(config: T5Config) -> T5Config:
    return dataclasses.replace(config, scan_layers=False, remat="none")


def stack_layers(flat: dict[str, Any], config: T5Config) -> dict[str, Any]:
    """"/"-joined params in the unrolled layout -> `config`'s layout (scanned: {s}/layers/... stacked on axis 0)."""
    if not config.scan_layers:
        return flat
    out, stacked = {}, {}
    for path, value in flat.items():
        m = re.fullmatch(r"(encoder|decoder)/block_(\d+)/(.+)", path)
        if m is None:
            out[path] = value
        else:
            stacked.setdefault(f"{m[1]}/layers/{m[3]}", {})[int(m[2])] = value
    for path, layers in stacked.items():
        out[path] = np.stack([np.asarray(layers[i]) for i in range(len(layers))])
    return out


def unstack_layers(flat: dict[str, Any], config: T5Config) -> dict[str, Any]:
    """The inverse of `stack_layers`: `config`'s layout -> the unrolled one that NAME_TABLE names."""
    if not config.scan_layers:
        return flat
    out = {}
    for path, value in flat.items():
        m = re.fullmatch(r"(encoder|decoder)/layers/(.+)", path)
        if m is None:
            out[path] = value
        else:
            out.update({f"{m[1]}/block_{i}/{m[2]}": value[i] for i in range(value.shape[0])})
    return out


def name_pairs(config: T5Config) -> Iterator[tuple[str, str, bool]]:
    """NAME_TABLE expanded for `config`: every (our path, HF name, transposed) of the model."""
    ff_names = ("wi_0", "wi_1", "wo") if config.gated else ("wi", "wo")
    for ours, theirs, transposed in NAME_TABLE:
        if ours.startswith("lm_head") and config.tie_word_embeddings:
            continue
        stacks = ("encoder", "decoder") if "{s}" in ours else ("decoder",) if ours.startswith("decoder/") else (None,)
        for s in stacks:
            layers = config.num_decoder_layers if s == "decoder" else config.num_layers
            for i, p, w in itertools.product(
                range(layers) if "{i}" in ours else (None,),
                "qkvo" if "{p}" in ours else (None,),
                ff_names if "{w}" in ours else (None,),
            ):
                fields = {"s": s, "i": i, "p": p, "w": w, "ff": 2 if s == "decoder" else 1}
                yield ours.format(**fields), theirs.format(**fields), transposed


# ---------------------------------------------------------------- pytorch_model.bin without torch

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)  # own the memory, in C order


def _rebuild_parameter(tensor: np.ndarray, *_: Any) -> np.ndarray:
    return tensor


class _StateDict(dict):
    """Stands in for OrderedDict; torch pickles a state dict's `_metadata` attribute onto it."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def read_torch_bin(path: str | Path) -> dict[str, np.ndarray]:
    """A torch.save'd state dict (zip format, torch >= 1.6) as numpy arrays, without importing torch.

    Only tensor storages, OrderedDict and the tensor rebuild functions may be unpickled: anything else in the
    pickle (code a malicious file could run) raises ConfigError.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ConfigError(f"{path}: not a zip-format torch checkpoint (legacy torch.save format?)") from e
    with archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ConfigError(f"{path}: no data.pkl inside; not a torch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        storages: dict[str, np.ndarray] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) == ("collections", "OrderedDict"):
                    return _StateDict
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return _rebuild_tensor
                if (module, name) == ("torch._utils", "_rebuild_parameter"):
                    return _rebuild_parameter
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _StorageType(name)
                raise ConfigError(f"{path}: refusing to unpickle {module}.{name} (only tensors are read)")

            def persistent_load(self, pid: Any) -> np.ndarray:
                kind, storage_type, key, _location, _numel = pid
                if kind != "storage" or not isinstance(storage_type, _StorageType):
                    raise ConfigError(f"{path}: unsupported storage record {pid!r}")
                if key not in storages:
                    dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
                    storages[key] = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=dtype)
                return storages[key]

        with archive.open(pkl) as f:
            state = Unpickler(f).load()
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


# ---------------------------------------------------------------- safetensors, any dtype

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as numpy arrays (memory-mapped), bf16 included.

    safetensors' own numpy loader rejects bf16, the dtype many T5 checkpoints are published in.
    """
    path = Path(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        header_len = int(data[:8].view("<u8")[0])
        header = json.loads(bytes(data[8:8 + header_len]))
    except (ValueError, IndexError) as e:
        raise ConfigError(f"{path}: not a safetensors file ({e})") from e
    body = data[8 + header_len:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ConfigError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        out[name] = body[start:end].view(dtype).reshape(info["shape"])
    return out


# ---------------------------------------------------------------- load / save

def _read_tensors(model_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    for name in WEIGHT_FILES:
        path = model_dir / name
        if path.is_file():
            return path, (read_safetensors(path) if name.endswith(".safetensors") else read_torch_bin(path))
    if (model_dir / "model.safetensors.index.json").is_file() or (model_dir / "pytorch_model.bin.index.json").is_file():
        raise ConfigError(f"{model_dir}: sharded checkpoints are not supported; merge the shards first")
    raise ConfigError(f"{model_dir}: no {' or '.join(WEIGHT_FILES)}")


def read_config(model_dir: str | Path, dtype: str = "float32", scan_layers: bool = False) -> T5Config:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{model_dir}: no config.json (is it a Hugging Face model directory?)")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from e
    try:
        return dataclasses.replace(config_from_hf(hf, dtype=dtype), scan_layers=scan_layers)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def load_hf(model_dir: str | Path, dtype: str = "float32", scan_layers: bool = False) -> tuple[T5Config, dict]:
    """(config, params) from a HF T5 directory; params are float32 numpy arrays in our tree layout, scanned
    (stacked per stack on a leading layer axis) when `scan_layers`."""
    model_dir = Path(model_dir)
    config = read_config(model_dir, dtype, scan_layers)
    weights_path, tensors = _read_tensors(model_dir)
    expected = traverse_util.flatten_dict(
        jax.eval_shape(lambda: init_params(_unrolled(config), jax.random.PRNGKey(0))), sep="/")
    flat: dict[str, np.ndarray] = {}
    used = set(IGNORED_HF_TENSORS)
    for ours, theirs, transposed in name_pairs(config):
        if theirs not in tensors and theirs == "lm_head.weight":
            theirs = "shared.weight"  # transformers 5.x leaves out a head equal to the embedding
        if theirs not in tensors:
            raise ConfigError(f"{weights_path}: tensor {theirs!r} is missing (needed for {ours})")
        value = np.array(tensors[theirs], dtype=np.float32)  # a copy: never a view of the mapped file
        value = value.T if transposed else value
        if value.shape != expected[ours].shape:
            implied = expected[ours].shape[::-1] if transposed else expected[ours].shape
            raise ConfigError(f"{weights_path}: tensor {theirs!r} has shape {tensors[theirs].shape}, "
                              f"config.json implies {implied}")
        flat[ours] = np.ascontiguousarray(value)
        used.add(theirs)
    if config.tie_word_embeddings and "lm_head.weight" in tensors:
        # Older checkpoints store the tied head's copy; a different one would be silently dropped.
        if not np.array_equal(tensors["lm_head.weight"], tensors["shared.weight"]):
            raise ConfigError(f"{weights_path}: lm_head.weight differs from shared.weight but config.json "
                              "says the head is tied (tie_word_embeddings / scale_decoder_outputs)")
        used.add("lm_head.weight")
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise ConfigError(f"{weights_path}: tensors this T5 does not have: {', '.join(unknown[:5])}"
                          + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    return config, traverse_util.unflatten_dict(stack_layers(flat, config), sep="/")


def to_hf_tensors(params: dict, config: T5Config) -> dict[str, np.ndarray]:
    """Our params as HF-named float32 numpy tensors (what model.safetensors holds)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    scanned = any("/layers/" in path for path in flat)
    if scanned != config.scan_layers:
        raise ValueError(f"params are in the {'scanned' if scanned else 'unrolled'} layout but the config says "
                         f"scan_layers={config.scan_layers}")
    flat = unstack_layers(flat, config)
    out = {}
    for ours, theirs, transposed in name_pairs(config):
        if ours not in flat:
            raise ValueError(f"params have no {ours!r}; do they belong to this config?")
        value = np.asarray(jax.device_get(flat[ours]), dtype=np.float32)
        out[theirs] = np.ascontiguousarray(value.T if transposed else value)
    return out


def save_hf(params: dict, config: T5Config, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write a HF T5 directory (config.json, model.safetensors, generation_config.json [, tokenizer files])."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_tensors(params, config), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config_to_hf(config), indent=2, sort_keys=True) + "\n")
    generation = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, out_dir)
    return out_dir


MODEL_FILES = frozenset({"config.json", "generation_config.json", *WEIGHT_FILES,
                         "model.safetensors.index.json", "pytorch_model.bin.index.json"})


def tokenizer_files(directory: str | Path) -> list[Path]:
    """The files of a tokenizer directory (which may be a whole HF model directory: model files are left out)."""
    return sorted(f for f in Path(directory).iterdir() if f.is_file() and f.name not in MODEL_FILES)


def copy_tokenizer_files(tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise ConfigError(f"tokenizer directory {tokenizer_dir} does not exist")
    files = tokenizer_files(tokenizer_dir)
    if not files:
        raise ConfigError(f"tokenizer directory {tokenizer_dir} holds no tokenizer files")
    for f in files:
        shutil.copy2(f, Path(out_dir) / f.name)
