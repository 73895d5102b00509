"""`jaxdiff eval`: how good is a trained run? Sample quality and the variational bound.

`evaluate_run(workdir, ...)` samples with the run's EMA parameters (the code behind
`jaxdiff sample`, so the same seed gives the same images) and measures, in the feature space of a
judge network (the shipped digits classifier for digits; any `--features module:function` for
other data):

- Frechet distance and improved precision/recall (k=3) against the real reference split (train);
- the class histogram of the judge's predictions, its entropy, the confident fraction, and for a
  class-conditional model the conditional accuracy (samples are generated for classes
  0, 1, ..., K-1, 0, ...);
- the same numbers for real held-out images (the test split) as the floor a perfect model
  would reach. Frechet distance and recall depend on the number of images, so when there are
  more samples than held-out images the first samples are also scored at the floor's count;
- the DDPM variational bound (Ho et al. 2020, eq. 5) in bits per dimension on held-out images
  quantised to the 8-bit grid, with `bpd_terms` of the T - 1 KL terms evaluated (see
  `jaxdiff.evaluation.bits_per_dim`); for a conditional model it is the bound on
  -log p(x | y) at the true labels. Every prediction type (epsilon, sample, v_prediction) is
  converted to the model mean in the same way, so all are supported.

Results go to `<workdir>/eval.json`; `markdown_table(results)` formats them.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxdiff.atomic_file import atomic_write
from jaxdiff.validation import InputError, InputTypeError

DIGITS = "digits"
DIGITS_SHAPE = (16, 16, 1)
EVAL_FILE = "eval.json"

#: (key in the metrics dict, row name, format) of the markdown table, in order.
TABLE_ROWS = (
    ("frechet_distance", "Frechet distance", "{:.3f}"),
    ("precision", "precision (k=3)", "{:.3f}"),
    ("recall", "recall (k=3)", "{:.3f}"),
    ("confident_fraction", "confident (p >= 0.9)", "{:.3f}"),
    ("class_entropy_bits", "class entropy (bits)", "{:.3f}"),
    ("conditional_accuracy", "conditional accuracy", "{:.3f}"),
    ("class_histogram", "class histogram", "{}"),
    ("out_of_range_fraction", "pixels outside [-1, 1]", "{:.4f}"),
    ("num_samples", "images", "{}"),
)


def load_feature_extractor(spec: str) -> Callable:
    """Imports `module:function` (a callable images (N, H, W, C) in [-1, 1] -> (N, D) features).

    The current directory is searched too, so a `feats.py` next to the command line works as
    `--features feats:inception`.
    """
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise InputError(f"--features must look like 'module:function' (e.g. "
                         f"'my_features:inception'), a callable images (N, H, W, C) in [-1, 1] -> "
                         f"(N, D) features; got {spec!r}")
    module_name, attribute = (p.strip() for p in parts)
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"cannot import module {module_name!r} named by --features {spec!r}: "
                         f"{e}") from None
    for name in attribute.split("."):
        if not hasattr(obj, name):
            raise InputError(f"module {module_name!r} has no attribute {attribute!r} (from "
                             f"--features {spec!r})")
        obj = getattr(obj, name)
    if not callable(obj):
        raise InputTypeError(
            f"--features {spec!r} is not callable; it must be a function images -> "
            f"(N, D) features")
    return obj


def uses_digits_judge(config) -> bool:
    """The shipped digits classifier judges runs on the digits data at 16x16x1."""
    shape = (config.model.image_size, config.model.image_size, config.model.in_channels)
    return config.data.name == DIGITS and shape == DIGITS_SHAPE


def quantize(images: np.ndarray) -> np.ndarray:
    """Rounds [-1, 1] images to the 256-level grid the discretized decoder of the bound assumes."""
    return (np.round((np.clip(images, -1, 1) + 1.0) * 127.5) / 127.5 - 1.0).astype(np.float32)


def bound_in_bits_per_dim(config, graphdef, params, images, labels, *, num_terms: int,
                          seed: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """Mean DDPM bound (bits/dim) of `images` (N, H, W, C), in batches of `batch_size`.

    The last batch is padded to full size (so one compiled loop serves all batches for an
    unconditional model). For a conditional model the bound is conditioned on `labels`.

    Returns:
      {"total", "total_std_error", "prior", "kl", "decoder"} (means over images, floats),
      "num_images", "num_terms" (KL terms evaluated of T - 1), "num_timesteps", "conditional".
    """
    import jax
    import jax.numpy as jnp

    from jaxdiff.evaluation import bits_per_dim
    from jaxdiff.models import make_model_fn
    from jaxdiff.training import schedule_from_config

    schedule = schedule_from_config(config)
    conditional = int(config.model.num_classes) > 0
    model_fn = make_model_fn(graphdef, params, labels_enabled=conditional)
    x = quantize(np.asarray(images, np.float32))
    n = x.shape[0]
    batch_size = min(batch_size, n)
    key = jax.random.key(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("total", "prior", "kl", "decoder")}
    for i, start in enumerate(range(0, n, batch_size)):
        count = min(batch_size, n - start)
        index = np.resize(np.arange(start, start + count), batch_size)  # pad by repeating
        fn = model_fn
        if conditional:
            y = jnp.asarray(np.asarray(labels)[index], jnp.int32)

            def fn(x_t, t, y=y):  # a new function per batch: compiles once per batch
                return model_fn(x_t, t, y)
        out = bits_per_dim(fn, schedule, jnp.asarray(x[index]), key=jax.random.fold_in(key, i),
                           num_terms=num_terms,
                           prediction_type=config.diffusion.prediction_type)
        for name, collected in parts.items():
            collected.append(np.asarray(out[name], np.float64)[:count])
    values = {name: np.concatenate(v) for name, v in parts.items()}
    total = values["total"]
    return {
        "total": float(total.mean()),
        "total_std_error": float(total.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
        **{name: float(values[name].mean()) for name in ("prior", "kl", "decoder")},
        "num_images": int(n),
        "num_terms": int(num_terms),
        "num_timesteps": int(schedule.num_timesteps),
        "conditional": conditional,
    }


def _load_data(config, split: str, max_examples: int, flag: str):
    from jaxdiff.data import load_split

    try:
        return load_split(config.data, split, max_examples)
    except ValueError as e:
        raise InputError(f"{e}. Choose another split with {flag} (TFDS slices such as "
                         f"train[:90%] work)") from None


def evaluate_run(workdir, *, num: int = 2000, method: str | None = None,
                 num_steps: int | None = None, seed: int = 0, batch_size: int | None = None,
                 guidance_scale: float | None = None, features: str | Callable | None = None,
                 split: str = "test", reference_split: str = "train", num_real: int = 10000,
                 bpd_num: int = 256, bpd_terms: int = 50, restore_step: int | None = None,
                 progress: bool = False, write: bool = True) -> dict[str, Any]:
    """Evaluates the run in `workdir` (see the module docstring); writes `<workdir>/eval.json`.

    Args:
      num: images to generate (>= 2).
      method, num_steps, batch_size, guidance_scale: sampling options (default: the run's
        config.sampling).
      seed: seed of the samples and of the bound's noise.
      features: "module:function" or a callable images -> (N, D) features; required unless the
        run is on digits (then the digits classifier's 64-d features are used).
      split: held-out split for the floor and the bound; reference_split: what samples are
        compared with (at most `num_real` images of it).
      bpd_num: held-out images for the bound (0 skips it); bpd_terms: KL terms evaluated.

    Returns:
      The dict written to eval.json: "samples", "real_floor" and (when num exceeds the floor's
      count) "samples_matched" metric dicts (see `jaxdiff.evaluation.evaluate_samples`),
      "bits_per_dim" (see `bound_in_bits_per_dim`, or None), and the settings used.
    """
    from jaxdiff.generate import load_run
    from jaxdiff.run_kind import open_run
    from jaxdiff.training import schedule_from_config
    from jaxdiff.validation import check_int

    workdir = Path(workdir)
    _, config = open_run(workdir, "pixel_diffusion")
    num = check_int(num, "--num", 2)
    num_real = check_int(num_real, "--num_real", 2)
    bpd_num = check_int(bpd_num, "--bpd_num", 0)
    if bpd_num and config.diffusion.objective == "flow":
        # the bound is the DDPM forward process's; a flow-matching model has no such bound here
        print("note: no variational bound for a flow-matching run (--bpd_num ignored)",
              file=sys.stderr)
        bpd_num = 0
    if bpd_num:
        bpd_terms = check_int(bpd_terms, "--bpd_terms", 1,
                              int(config.diffusion.num_timesteps) - 1)
    extractor, feature_name = _feature_extractor(config, features)
    schedule_from_config(config)  # checks the schedule before the long work

    _, graphdef, params, step = load_run(workdir, restore_step)
    classifier = _digits_classifier(progress) if uses_digits_judge(config) else None
    if extractor is None:
        extractor = classifier.features
    reference, _ = _load_data(config, reference_split, num_real, "--reference_split")
    held_out, held_labels = _load_data(config, split, max(num, bpd_num, 2), "--split")

    settings, images, labels = _generate(config, graphdef, params, num=num, method=method,
                                         num_steps=num_steps, seed=seed, batch_size=batch_size,
                                         guidance_scale=guidance_scale, progress=progress)
    n_floor = min(num, held_out.shape[0])
    results: dict[str, Any] = {
        "workdir": str(workdir),
        "checkpoint_step": int(step),
        **settings,
        "features": feature_name,
        "reference": {"split": reference_split, "num_images": int(reference.shape[0])},
        "held_out": {"split": split, "num_images": int(n_floor)},
        **_scores(images, labels, held_out[:n_floor], held_labels[:n_floor], reference,
                  extractor, classifier),
        "bits_per_dim": None,
    }
    if bpd_num:
        count = min(bpd_num, held_out.shape[0])
        results["bits_per_dim"] = {
            "split": split, "variance": "fixedlarge",
            **bound_in_bits_per_dim(config, graphdef, params, held_out[:count],
                                    held_labels[:count], num_terms=bpd_terms, seed=seed,
                                    batch_size=batch_size or 256)}
    if write:
        _write_json(workdir / EVAL_FILE, results)
    return results


def _feature_extractor(config, features) -> tuple[Callable | None, str]:
    """(extractor, name) from `--features`; (None, ...) when the digits classifier will judge.

    Raises InputError when the run has no built-in judge and no features were given.
    """
    if isinstance(features, str):
        return load_feature_extractor(features), features
    if features is not None:
        return features, getattr(features, "__name__", repr(features))
    if uses_digits_judge(config):
        return None, "digits classifier (64-d penultimate layer)"
    shape = (config.model.image_size, config.model.image_size, config.model.in_channels)
    raise InputError(
        f"no feature extractor for dataset {config.data.name!r} with images {shape}: the "
        f"built-in judge is the digits classifier (data.name='digits', 16x16x1). Pass "
        f"--features module:function, a callable images (N, H, W, C) in [-1, 1] -> (N, D) "
        f"features (e.g. an Inception or CLIP network) to compute FID with your own network")


def _digits_classifier(progress: bool):
    """The shipped digits classifier (trained once and cached on first use)."""
    from jaxdiff.evaluation import load_digits_classifier
    from jaxdiff.evaluation.classifier import cache_path

    if not cache_path().exists() and progress:
        print(f"training the digits classifier once (cached at {cache_path()})",
              file=sys.stderr)
    return load_digits_classifier()


def _generate(config, graphdef, params, *, num: int, method, num_steps, seed: int, batch_size,
              guidance_scale, progress: bool):
    """(settings, images (num, H, W, C), labels (num,) or None) sampled for the evaluation;
    settings holds the sampling options used (unset ones from config.sampling)."""
    from jaxdiff.generate import generate_images

    num_classes = int(config.model.num_classes)
    labels = np.arange(num, dtype=np.int32) % num_classes if num_classes else None
    method = method or config.sampling.method
    num_steps = num_steps or config.sampling.num_steps
    if num_classes and guidance_scale is None:
        guidance_scale = float(config.sampling.guidance_scale)
    images = generate_images(config, graphdef, params, num=num, seed=seed, method=method,
                             num_steps=num_steps, labels=labels, guidance_scale=guidance_scale,
                             batch_size=batch_size, progress=progress)
    settings = {"method": method, "num_steps": int(num_steps), "seed": int(seed),
                "guidance_scale": guidance_scale if num_classes else None}
    return settings, images, labels


def _scores(images, labels, held_out, held_labels, reference, extractor,
            classifier) -> dict[str, Any]:
    """Metric dicts of the samples, of the held-out images (the floor) and, when there are more
    samples than held-out images, of as many samples as held-out images."""
    from jaxdiff.evaluation import evaluate_samples

    def score(x, requested):
        return evaluate_samples(x, reference, extractor, classifier,
                                requested_labels=requested if classifier is not None else None)

    n_floor = held_out.shape[0]
    results = {"samples": score(images, labels),
               "real_floor": score(held_out, held_labels if labels is not None else None)}
    if classifier is not None:
        results["classifier_test_accuracy"] = float(classifier.test_accuracy)
    if images.shape[0] > n_floor:
        results["samples_matched"] = score(images[:n_floor],
                                           labels[:n_floor] if labels is not None else None)
    return results


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def markdown_table(results: dict) -> str:
    """The results of `evaluate_run` as a markdown table plus a line for bits/dim."""
    columns = [("samples", f"samples ({results['samples']['num_samples']})")]
    if "samples_matched" in results:
        columns.append(("samples_matched",
                        f"first {results['samples_matched']['num_samples']} samples"))
    floor_name = (f"real {results['held_out']['split']} (floor, "
                  f"{results['real_floor']['num_samples']})")
    columns.append(("real_floor", floor_name))
    lines = ["| metric | " + " | ".join(name for _, name in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for key, name, fmt in TABLE_ROWS:
        cells = [results[c].get(key) for c, _ in columns]
        if all(v is None for v in cells):
            continue
        lines.append(f"| {name} | " + " | ".join("-" if v is None else fmt.format(v)
                                                 for v in cells) + " |")
    ref = results["reference"]
    lines.append("")
    lines.append(f"Compared with {ref['num_images']} real {ref['split']} images in the feature "
                 f"space of: {results['features']}. Sampler: {results['method']}, "
                 f"{results['num_steps']} steps, checkpoint step {results['checkpoint_step']}.")
    bpd = results.get("bits_per_dim")
    if bpd:
        given = " given the true labels" if bpd["conditional"] else ""
        error = bpd["total_std_error"]
        error = "" if error is None else f" +- {error:.3f}"
        lines.append(f"Variational bound{given}: {bpd['total']:.3f}{error} "
                     f"bits/dim on {bpd['num_images']} "
                     f"{bpd['split']} images ({bpd['num_terms']} of {bpd['num_timesteps'] - 1} "
                     f"KL terms; prior {bpd['prior']:.4f}, KL {bpd['kl']:.3f}, decoder "
                     f"{bpd['decoder']:.3f}).")
    return "\n".join(lines)
