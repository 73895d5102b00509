"""`jaxdiff eval` on a tiny run: eval.json with every metric, a user feature extractor whose
Frechet distance matches a float64 scipy reference, and clear errors."""

import json
import math

import jax
import numpy as np
import pytest
import scipy.linalg
from untrained_run import make_untrained_run

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff.cli import main
from jaxdiff.evaluation import classifier as classifier_module

SAMPLE_ARGS = ["--num", "12", "--steps", "2", "--batch", "12", "--seed", "3"]
METRIC_KEYS = {"num_samples", "num_real", "out_of_range_fraction", "feature_dim",
               "frechet_distance", "k", "precision", "recall", "confident_fraction",
               "confidence_threshold", "class_histogram", "class_entropy_bits",
               "class_entropy_nats", "max_entropy_bits", "conditional_accuracy"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_untrained_run(tmp_path_factory.mktemp("run"), "digits_cond")


@pytest.fixture(autouse=True)
def untrained_classifier(tmp_path_factory, monkeypatch):
    """A randomly initialised digits classifier in a private cache: these tests check the
    plumbing, not the judge (which tests/test_evaluation.py trains and checks)."""
    cache = tmp_path_factory.getbasetemp() / "classifier-cache"
    path = classifier_module.cache_path(cache)
    if not path.exists():
        params = classifier_module.DigitsCNN().init(
            jax.random.key(0), np.zeros((1, 16, 16, 1), np.float32))["params"]
        classifier_module._save(classifier_module.DigitsClassifier(params, 0.0), path)
    monkeypatch.setenv("JAXDIFF_CACHE", str(cache))


def _numbers(tree):
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _numbers(v)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def test_eval_writes_every_metric_with_finite_values(run, capsys):
    assert main(["eval", "--workdir", str(run), *SAMPLE_ARGS, "--bpd_num", "4",
                 "--bpd_terms", "3"]) == 0
    results = json.loads((run / "eval.json").read_text())
    for part in ("samples", "real_floor"):
        assert set(results[part]) == METRIC_KEYS
        assert sum(results[part]["class_histogram"]) == 12
    assert results["samples"]["num_samples"] == 12
    assert results["reference"] == {"split": "train", "num_images": 1500}
    assert results["held_out"] == {"split": "test", "num_images": 12}
    bpd = results["bits_per_dim"]
    assert (bpd["num_images"], bpd["num_terms"], bpd["conditional"]) == (4, 3, True)
    assert bpd["total"] == pytest.approx(bpd["prior"] + bpd["kl"] + bpd["decoder"], rel=1e-6)  # parts summed in float32
    assert all(math.isfinite(x) for x in _numbers(results))
    table = capsys.readouterr().out
    assert "| Frechet distance |" in table and "bits/dim" in table


def test_real_floor_uses_the_held_out_split_with_its_labels(run):
    main(["eval", "--workdir", str(run), *SAMPLE_ARGS, "--bpd_num", "0"])
    results = json.loads((run / "eval.json").read_text())
    assert results["bits_per_dim"] is None
    from jaxdiff.data import load_split

    config = ckpt_lib.load_config(run)
    test_x, test_y = load_split(config.data, "test", 12)
    clf = classifier_module.load_digits_classifier()
    preds = clf.predict(test_x)
    assert results["real_floor"]["conditional_accuracy"] == pytest.approx(
        np.mean(preds == test_y))
    assert results["real_floor"]["class_histogram"] == np.bincount(preds, minlength=10).tolist()


def _reference_frechet(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * covmean))


def test_user_feature_extractor_gives_the_frechet_distance_of_its_features(
        run, tmp_path, monkeypatch):
    (tmp_path / "my_features.py").write_text(
        "import numpy as np\n"
        "def quadrants(images):\n"
        "    x = np.asarray(images, np.float64)\n"
        "    return x.reshape(x.shape[0], 2, 8, 2, 8).mean(axis=(2, 4)).reshape(-1, 4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["eval", "--workdir", str(run), *SAMPLE_ARGS, "--bpd_num", "0",
                 "--features", "my_features:quadrants"]) == 0
    results = json.loads((run / "eval.json").read_text())
    assert results["features"] == "my_features:quadrants"
    assert results["samples"]["feature_dim"] == 4
    from jaxdiff.data import load_split

    config = ckpt_lib.load_config(run)
    train_x, _ = load_split(config.data, "train")
    test_x, _ = load_split(config.data, "test", 12)

    def feats(x):
        return np.asarray(x, np.float64).reshape(-1, 2, 8, 2, 8).mean(axis=(2, 4)).reshape(-1, 4)

    assert results["real_floor"]["frechet_distance"] == pytest.approx(
        _reference_frechet(feats(test_x), feats(train_x)), rel=1e-6)


def _config_only_workdir(run, tmp_path, **data):
    config = ckpt_lib.load_config(run)
    for key, value in data.items():
        config.data[key] = value
    ckpt_lib.save_config(tmp_path, config)
    return tmp_path


def test_eval_of_other_data_without_features_exits_2_naming_the_option(run, tmp_path, capsys):
    workdir = _config_only_workdir(run, tmp_path, name="mnist")
    assert main(["eval", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "'mnist'" in err and "--features module:function" in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--features", "nocolon"], "module:function"),
    (["--features", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
    (["--features", "math:no_such_fn"], "has no attribute 'no_such_fn'"),
    (["--num", "1"], "--num must be an integer >= 2"),
    (["--bpd_terms", "1000"], "--bpd_terms must be an integer in [1, 999]"),
])
def test_eval_bad_input_exits_2_before_sampling(run, capsys, args, message):
    assert main(["eval", "--workdir", str(run), *args]) == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_folder_without_a_run_exits_2(tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "a jaxdiff workdir?" in capsys.readouterr().err


def test_markdown_table_adds_a_matched_column_when_samples_outnumber_the_floor():
    from jaxdiff.commands.eval import markdown_table

    def metrics(n, fd):
        return {"num_samples": n, "frechet_distance": fd, "precision": 0.5, "recall": 0.25}

    results = {"samples": metrics(2000, 3.0), "samples_matched": metrics(297, 4.0),
               "real_floor": metrics(297, 1.0), "held_out": {"split": "test"},
               "reference": {"split": "train", "num_images": 1500}, "features": "f",
               "method": "ddim", "num_steps": 50, "checkpoint_step": 1500, "bits_per_dim": None}
    lines = markdown_table(results).splitlines()
    assert lines[0] == "| metric | samples (2000) | first 297 samples | real test (floor, 297) |"
    assert lines[2] == "| Frechet distance | 3.000 | 4.000 | 1.000 |"
