"""Reading a diffusers / transformers component folder: config.json and its safetensors weights.

Only safetensors are read (into numpy, tensor by tensor, by the format's documented layout: no
torch, and never a pickle). Downloaded folders are untidy, so the weights file is chosen the
way diffusers and transformers choose it: `<stem>[.<variant>].safetensors` or the sharded
`<stem>[.<variant>].safetensors.index.json`, where the stem is `diffusion_pytorch_model`
(diffusers) or `model` (transformers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


# safetensors dtype names -> little-endian numpy dtypes (bfloat16 through ml_dtypes)
_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "bfloat16", "F64": "<f8", "I64": "<i8",
           "I32": "<i4", "U8": "u1", "I8": "i1", "BOOL": "?"}


def _damaged(path: Path, why: str) -> WeightsError:
    return WeightsError(f"cannot read {str(path)!r}: {why}. The file is damaged or truncated "
                        f"(an interrupted download?): download or save it again.")


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class SafetensorsTensors(Mapping):
    """{tensor name: numpy array} of one or more safetensors files, each tensor read from disk
    when it is looked up (by the format's documented layout: an 8-byte little-endian header
    length, a JSON header of dtype / shape / data offsets, then the raw little-endian data).

    The loader converts tensor by tensor, so a checkpoint is never held twice: neither the whole
    file in memory (safetensors.numpy.load_file) nor a memory map whose touched pages stay
    resident. Every header is checked when the file is opened (dtypes, shapes, offsets inside the
    file), so a truncated or damaged file is refused before anything is converted. bfloat16
    tensors (a dtype numpy has no name for) are returned as float32.
    """

    def __init__(self, paths):
        self._entries: dict[str, tuple[Path, int, str, tuple[int, ...]]] = {}
        for path in paths:
            for name, entry in self._read_header(Path(path)).items():
                if name in self._entries:
                    raise WeightsError(f"the tensor {name!r} is stored twice (in "
                                       f"{str(self._entries[name][0])!r} and {str(path)!r})")
                self._entries[name] = entry

    @staticmethod
    def _read_header(path: Path) -> dict:
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                length = int.from_bytes(f.read(8), "little")
                if size < 8 or length > size - 8:
                    raise _damaged(path, f"its header length ({length} bytes) exceeds the file "
                                         f"({size} bytes)")
                header = json.loads(f.read(length))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _damaged(path, f"its header is not readable JSON ({e})") from None
        if not isinstance(header, dict):
            raise _damaged(path, "its header is not a JSON object")
        header.pop("__metadata__", None)
        base, entries = 8 + length, {}
        for name, info in header.items():
            try:
                dtype = _numpy_dtype(_DTYPES[info["dtype"]])
                shape = tuple(int(d) for d in info["shape"])
                start, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise _damaged(path, f"the header entry of tensor {name!r} ({info!r}) is not "
                                     f"a supported dtype, shape and data offsets") from None
            if end - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or start < 0:
                raise _damaged(path, f"tensor {name!r}: offsets {start}..{end} do not hold a "
                                     f"{info['dtype']} array of shape {shape}")
            if base + end > size:
                raise _damaged(path, f"tensor {name!r} ends at byte {base + end} but the file "
                                     f"has {size} bytes")
            entries[name] = (path, base + start, info["dtype"], shape)
        return entries

    def __getitem__(self, name: str) -> np.ndarray:
        path, offset, dtype_name, shape = self._entries[name]
        dtype = _numpy_dtype(_DTYPES[dtype_name])
        count = int(np.prod(shape, dtype=np.int64))
        with open(path, "rb") as f:
            f.seek(offset)
            array = np.fromfile(f, dtype=dtype, count=count)
        if array.size != count:
            raise _damaged(path, f"tensor {name!r} is cut short")
        array = array.reshape(shape)
        return array.astype(np.float32) if dtype_name == "BF16" else array

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def read_weights(folder, variant: str | None = None) -> Mapping:
    """{torch name: numpy array} of a component folder (all shards of a sharded checkpoint), as a
    `SafetensorsTensors` mapping that reads each tensor when it is looked up."""
    path = weights_file(folder, variant)
    if not path.name.endswith(".index.json"):
        return SafetensorsTensors([path])
    try:
        index = json.loads(path.read_text())
        shards = sorted(set(index["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{str(path)!r} is not a safetensors shard index (needs a "
                           f"'weight_map' of tensor name -> shard file): {e}") from None
    for shard in shards:
        if not (path.parent / shard).is_file():
            raise WeightsError(f"{str(path)!r} names the shard {shard!r}, which is missing")
    tensors = SafetensorsTensors([path.parent / shard for shard in shards])
    listed = set(index["weight_map"])
    if listed != set(tensors):
        missing = sorted(listed - set(tensors))[:10]
        raise WeightsError(f"the shards of {str(path)!r} do not hold the tensors its index lists "
                           f"(e.g. missing {missing})")
    return tensors
