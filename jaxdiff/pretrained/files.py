"""Reading a diffusers / transformers component folder: config.json and its safetensors weights.

Only safetensors are read (with the numpy API: no torch, and never a pickle). Downloaded folders
are untidy, so the weights file is chosen the way diffusers and transformers choose it:
`<stem>[.<variant>].safetensors` or the sharded `<stem>[.<variant>].safetensors.index.json`, where
the stem is `diffusion_pytorch_model` (diffusers) or `model` (transformers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxdiff.pretrained.convert import WeightsError
from jaxdiff.validation import InputError, InputFileNotFoundError

STEMS = ("diffusion_pytorch_model", "model")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def read_config(folder) -> dict:
    """The component's config.json as a dict."""
    folder = Path(folder)
    path = folder / "config.json"
    if not folder.is_dir():
        raise InputFileNotFoundError(f"component folder {str(folder)!r} does not exist")
    if not path.is_file():
        raise InputFileNotFoundError(f"{str(folder)!r} has no config.json: it is not a diffusers "
                                     f"or transformers model folder")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"{str(path)!r} must hold a JSON object; got {type(config).__name__}")
    return config


def _candidates(folder: Path, variant: str | None) -> list[Path]:
    infix = f".{variant}" if variant else ""
    names = []
    for stem in STEMS:
        names += [f"{stem}{infix}.safetensors", f"{stem}{infix}.safetensors.index.json"]
    return [folder / n for n in names if (folder / n).is_file()]


def weights_file(folder, variant: str | None = None) -> Path:
    """The safetensors file (or shard index) to read from a component folder.

    Raises InputError for a folder with only pickle checkpoints (saying how to convert them), for
    a missing variant (listing the variants there are) or for a folder with no weights at all.
    """
    folder = Path(folder)
    found = _candidates(folder, variant)
    if found:
        return found[0]
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    pickles = [n for n in present if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise WeightsError(
            f"{str(folder)!r} holds only pickle checkpoints ({', '.join(pickles)}); jaxdiff never "
            f"loads pickles (they can run code). Convert once with the library that wrote them: "
            f"load the folder with diffusers/transformers `from_pretrained` and call "
            f"`save_pretrained(folder, safe_serialization=True)`, which writes .safetensors.")
    variants = sorted({n.split(".")[1] for n in present
                       if n.startswith(STEMS) and n.count(".") >= 2 and ".safetensors" in n})
    if variant and variants:
        raise WeightsError(f"{str(folder)!r} has no {variant!r} variant of its weights; variants "
                           f"there: {variants}" + (" (and the plain file)" if _candidates(
                               folder, None) else ""))
    if variants:
        raise WeightsError(f"{str(folder)!r} has only variant weights {variants}: pass "
                           f"variant= (the CLI's --variant) with one of them")
    raise WeightsError(f"{str(folder)!r} holds no weights: expected one of "
                       f"{[s + '.safetensors' for s in STEMS]} (or a sharded .index.json); "
                       f"found {present}")


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """safetensors.numpy.load_file, except that bfloat16 checkpoints (a dtype numpy cannot name)
    are read by the file's documented layout into float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except TypeError as e:
        if "bfloat16" not in str(e):
            raise
        return _read_raw_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"cannot read {str(path)!r}: {e}. The file is damaged or truncated "
                           f"(an interrupted download?): download or save it again.") from None


def _read_raw_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Reads a safetensors file by its documented layout (8-byte header length, JSON header,
    raw little-endian data), for dtypes the numpy API refuses (BF16)."""
    import ml_dtypes

    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
              "I8": np.int8, "BOOL": np.bool_}
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    body = memoryview(data)[8 + size:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if info["dtype"] not in dtypes or end > len(body):
            raise WeightsError(f"cannot read tensor {name!r} of {str(path)!r} "
                               f"(dtype {info['dtype']}, offsets {start}..{end})")
        arr = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).astype(np.float32)
    return out


def read_weights(folder, variant: str | None = None) -> dict[str, np.ndarray]:
    """{torch name: numpy array} of a component folder (all shards of a sharded checkpoint)."""
    path = weights_file(folder, variant)
    if not path.name.endswith(".index.json"):
        return _load_safetensors(path)
    try:
        index = json.loads(path.read_text())
        shards = sorted(set(index["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{str(path)!r} is not a safetensors shard index (needs a "
                           f"'weight_map' of tensor name -> shard file): {e}") from None
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
        shard_path = path.parent / shard
        if not shard_path.is_file():
            raise WeightsError(f"{str(path)!r} names the shard {shard!r}, which is missing")
        tensors.update(_load_safetensors(shard_path))
    listed = set(index["weight_map"])
    if listed != set(tensors):
        missing = sorted(listed - set(tensors))[:10]
        raise WeightsError(f"the shards of {str(path)!r} do not hold the tensors its index lists "
                           f"(e.g. missing {missing})")
    return tensors
