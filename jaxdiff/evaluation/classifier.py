"""A small CNN that classifies 16x16 digits: the judge of digits samples and their feature space.

It plays the role Inception-v3 plays for FID on ImageNet-like data, at the digits scale: its
predicted class probabilities give the confident fraction, class histogram and conditional
accuracy of samples, and its penultimate activations (64 values, before the ReLU) are the feature
space of the Frechet distance and of precision/recall.

Training is deterministic (fixed seed, fixed data order, full-precision float32 on CPU) and takes
some seconds on 2 CPU cores. The weights are built on first use and cached as an .npz file in
`cache_dir`, `$JAXDIFF_CACHE`, or `~/.cache/jaxdiff` (written atomically; a file that cannot be
read is rebuilt with a warning).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.atomic_file import atomic_write
from jaxdiff.data.digits_arrays import digits_split
from jaxdiff.validation import InputError, InputTypeError

IMAGE_SHAPE = (16, 16, 1)
NUM_CLASSES = 10
FEATURE_DIM = 64
#: Bump when the architecture, data or recipe changes: old cache files are then ignored.
VERSION = "v1"
SEED = 0
EPOCHS = 15
BATCH_SIZE = 50
LEARNING_RATE = 2e-3
_EVAL_BATCH = 256


class DigitsCNN(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(64)-dense(64)-relu-dense(10).

    Returns (logits (N, 10), features (N, 64)); the features are the 64 pre-activation values of
    the penultimate layer (before the ReLU, so no unit is constant at 0 over the data and the
    feature covariance is full rank).
    """

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 8x8
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 4x4
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        features = nn.Dense(FEATURE_DIM)(x)
        return nn.Dense(NUM_CLASSES)(nn.relu(features)), features


def check_classifier_images(images) -> np.ndarray:
    """Images must be float NHWC (N, 16, 16, 1) and finite; returns them as float32 numpy."""
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or dtype is None:
        raise InputTypeError(f"images must be an array of shape (N, 16, 16, 1); got "
                             f"{type(images).__name__}")
    if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
        raise InputError(f"the digits classifier takes images of shape (N, 16, 16, 1) (NHWC, "
                         f"float32 in [-1, 1]); got shape {tuple(shape)}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InputTypeError(f"images must be floating point in [-1, 1]; got dtype {dtype}")
    x = np.asarray(images, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError("images contain NaN or infinite values")
    return x


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: DigitsCNN, params, x):
    return model.apply({"params": params}, x)


@dataclasses.dataclass(frozen=True)
class DigitsClassifier:
    """Trained digits CNN. Methods take (N, 16, 16, 1) float images in [-1, 1], return numpy.

    Attributes:
      params: the Flax parameters.
      test_accuracy: accuracy on the digits test split measured when the weights were trained.
    """

    params: dict
    test_accuracy: float
    feature_dim: int = FEATURE_DIM
    num_classes: int = NUM_CLASSES

    def _run(self, images) -> tuple[np.ndarray, np.ndarray]:
        x = check_classifier_images(images)
        n = x.shape[0]
        logits = np.zeros((n, NUM_CLASSES), np.float32)
        features = np.zeros((n, FEATURE_DIM), np.float32)
        for start in range(0, n, _EVAL_BATCH):
            chunk = x[start:start + _EVAL_BATCH]
            m = chunk.shape[0]
            if m < _EVAL_BATCH:  # pad to one fixed shape: a single compilation
                chunk = np.concatenate([chunk, np.zeros((_EVAL_BATCH - m,) + IMAGE_SHAPE,
                                                        np.float32)])
            lg, ft = _apply(DigitsCNN(), self.params, chunk)
            logits[start:start + m] = np.asarray(lg)[:m]
            features[start:start + m] = np.asarray(ft)[:m]
        return logits, features

    def logits(self, images) -> np.ndarray:
        """Class logits, (N, 10) float32."""
        return self._run(images)[0]

    def features(self, images) -> np.ndarray:
        """Penultimate (pre-ReLU) activations, (N, 64) float32: the Frechet feature space."""
        return self._run(images)[1]

    def probabilities(self, images) -> np.ndarray:
        """Softmax class probabilities, (N, 10) float32."""
        return np.asarray(jax.nn.softmax(self.logits(images), axis=-1))

    def predict(self, images) -> np.ndarray:
        """Predicted classes, (N,) int32."""
        return np.argmax(self.logits(images), axis=-1).astype(np.int32)

    def __call__(self, images) -> np.ndarray:
        """A FeatureExtractor: same as `features`."""
        return self.features(images)


def _shift_augment(key, x):
    """Random integer shifts of up to 1 pixel (edge-padded), one per image."""
    n = x.shape[0]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (n, 2), 0, 3)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), IMAGE_SHAPE)

    return jax.vmap(crop)(padded, offsets)


def train_digits_classifier(seed: int = SEED, epochs: int = EPOCHS) -> DigitsClassifier:
    """Trains the CNN on the digits train split and measures its test accuracy.

    Adam with a cosine-decayed learning rate, batch 50, +-1 pixel random shifts; the data order
    and the shifts come from `seed`, so the weights are a function of the seed (on one platform).
    """
    train_x, train_y = digits_split("train")
    test_x, test_y = digits_split("test")
    n = train_x.shape[0] - train_x.shape[0] % BATCH_SIZE
    steps_per_epoch = n // BATCH_SIZE
    model = DigitsCNN()
    key = jax.random.key(seed)
    init_key, data_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1,) + IMAGE_SHAPE))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, epochs * steps_per_epoch))
    opt_state = tx.init(params)

    def loss_fn(p, x, y):
        logits, _ = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, o, x, y, k):
        grads = jax.grad(loss_fn)(p, _shift_augment(k, x), y)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o

    # A Python loop over a jitted step: on CPU, XLA runs convolutions inside a `lax.scan`
    # body an order of magnitude slower than in a top-level computation.
    rng = np.random.default_rng(seed)
    step_keys = jax.random.split(data_key, epochs * steps_per_epoch)
    for e in range(epochs):
        order = rng.permutation(train_x.shape[0])[:n].reshape(steps_per_epoch, BATCH_SIZE)
        for i, idx in enumerate(order):
            params, opt_state = step(params, opt_state, train_x[idx], train_y[idx],
                                     step_keys[e * steps_per_epoch + i])
    params = jax.device_get(params)
    clf = DigitsClassifier(params=params, test_accuracy=0.0)
    accuracy = float(np.mean(clf.predict(test_x) == test_y))
    return dataclasses.replace(clf, test_accuracy=accuracy)


def default_cache_dir() -> Path:
    """`$JAXDIFF_CACHE` if set, else `~/.cache/jaxdiff`."""
    env = os.environ.get("JAXDIFF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jaxdiff"


def cache_path(cache_dir=None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"digits_classifier-{VERSION}.npz"


def _save(clf: DigitsClassifier, path: Path) -> None:
    flat = {"/".join(k.key for k in kp): np.asarray(v)
            for kp, v in jax.tree_util.tree_flatten_with_path(clf.params)[0]}
    with atomic_write(path) as f:
        np.savez(f, __version__=np.array(VERSION),
                 __test_accuracy__=np.array(clf.test_accuracy), **flat)


def _load(path: Path) -> DigitsClassifier:
    with np.load(path, allow_pickle=False) as data:
        if str(data["__version__"]) != VERSION:
            raise ValueError(f"version {data['__version__']} != {VERSION}")
        accuracy = float(data["__test_accuracy__"])
        params: dict = {}
        for name in data.files:
            if name.startswith("__"):
                continue
            *parents, leaf = name.split("/")
            node = params
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = jnp.asarray(data[name])
    expected = jax.eval_shape(DigitsCNN().init, jax.random.key(0),
                              jnp.zeros((1,) + IMAGE_SHAPE))["params"]
    if jax.tree.structure(expected) != jax.tree.structure(params) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params))):
        raise ValueError("parameter names or shapes do not match the DigitsCNN architecture")
    return DigitsClassifier(params=params, test_accuracy=accuracy)


def load_digits_classifier(cache_dir=None) -> DigitsClassifier:
    """The trained digits classifier, from the cache or trained now (and cached).

    Args:
      cache_dir: folder of the cache file; default `$JAXDIFF_CACHE` or `~/.cache/jaxdiff`.

    Returns:
      A DigitsClassifier (its `test_accuracy` is that of the cached weights).

    Example:
      >>> clf = load_digits_classifier()            # doctest: +SKIP
      >>> clf.predict(digits_split("test")[0][:5])  # doctest: +SKIP
    """
    path = cache_path(cache_dir)
    if path.exists():
        try:
            return _load(path)
        except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt
            warnings.warn(f"digits classifier cache {str(path)!r} could not be read ({e}); "
                          f"retraining it", RuntimeWarning, stacklevel=2)
    clf = train_digits_classifier()
    _save(clf, path)
    return clf
