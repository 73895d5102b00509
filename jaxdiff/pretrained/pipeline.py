"""A diffusers pipeline folder: which components jaxdiff loads, which it ignores.

`model_index.json` names each component and its class. Components whose class jaxdiff builds
(`jaxdiff.pretrained.COMPONENTS`) are loaded; the scheduler's config and the tokenizer's folder
are handed on; everything else (`safety_checker/`, `feature_extractor/`, ...) is ignored and
listed in `PipelineFolder.ignored`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from jaxdiff.validation import InputError, InputFileNotFoundError


@dataclasses.dataclass(frozen=True)
class PipelineFolder:
    """What `load_pipeline` read.

    Attributes:
      folder: the pipeline folder.
      index: the dict of its model_index.json.
      components: {name: LoadedComponent} of the networks jaxdiff builds (e.g. "unet", "vae").
      scheduler_config: the dict of scheduler/scheduler_config.json, or None without one.
      tokenizer_folder: the tokenizer/ folder, or None without one.
      ignored: the names of components jaxdiff does not use.
    """

    folder: Path
    index: dict
    components: dict
    scheduler_config: dict | None
    tokenizer_folder: Path | None
    ignored: tuple[str, ...]


def read_model_index(folder) -> dict:
    """The dict of `folder/model_index.json` (checked to be a diffusers pipeline index)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileNotFoundError(f"pipeline folder {str(folder)!r} does not exist")
    path = folder / "model_index.json"
    if not path.is_file():
        hint = (" (it holds a config.json: a single component, load it with load_component)"
                if (folder / "config.json").is_file() else "")
        raise InputFileNotFoundError(f"{str(folder)!r} has no model_index.json: it is not a "
                                     f"diffusers pipeline folder{hint}")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(index, dict):
        raise InputError(f"{str(path)!r} must hold a JSON object")
    return index


def _entries(index: dict) -> dict[str, str | None]:
    """{component name: class name} of a model_index.json ([library, class] pairs)."""
    out = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        out[name] = value[1]
    return out


def load_pipeline(folder, *, variant: str | None = None, dtype: str = "float32",
                  required: tuple[str, ...] = ()) -> PipelineFolder:
    """Loads every network of a diffusers pipeline folder that jaxdiff builds.

    Args:
      folder: the folder `save_pretrained` of a diffusers pipeline writes (model_index.json,
        one subfolder per component).
      variant: weights variant of every component (e.g. "fp16"), None for the plain files.
      dtype: "float32" or "bfloat16" parameters.
      required: component names that must be present (e.g. ("unet", "scheduler")).

    Returns:
      PipelineFolder (nothing is half-loaded: any error is raised before it is returned).

    Raises:
      InputError / WeightsError: no model_index.json, a required or listed component folder
        missing, and every error of `load_component`.
    """
    from jaxdiff.pretrained import COMPONENTS, load_component

    folder = Path(folder)
    index = read_model_index(folder)
    entries = _entries(index)
    absent = [name for name in required if name not in entries]
    if absent:
        raise InputError(f"{str(folder)!r} (a {index.get('_class_name', 'pipeline')}) has no "
                         f"{', '.join(absent)} component in model_index.json; it lists "
                         f"{sorted(entries)}")
    used = [n for n, cls in entries.items() if cls in COMPONENTS]
    handed_on = [n for n in ("scheduler", "tokenizer") if n in entries]
    missing = [f"{n}/" for n in used + handed_on if not (folder / n).is_dir()]
    if missing:
        raise InputFileNotFoundError(
            f"{str(folder)!r} is missing the component folder(s) {', '.join(missing)} that "
            f"model_index.json lists: the download or copy is incomplete")
    components = {n: load_component(folder / n, variant=variant, dtype=dtype,
                                    kind=entries[n]) for n in used}
    scheduler_config = None
    if "scheduler" in entries:
        from jaxdiff.pipelines.scheduler_config import read_scheduler_config

        scheduler_config = read_scheduler_config(folder / "scheduler")
    return PipelineFolder(
        folder=folder, index=index, components=components, scheduler_config=scheduler_config,
        tokenizer_folder=folder / "tokenizer" if "tokenizer" in entries else None,
        ignored=tuple(sorted(set(entries) - set(used) - set(handed_on))))
