"""Sample-quality metrics against closed forms, hand-built point sets and float64 references."""

import json
import math
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from jaxdiff.evaluation import (
    bits_per_dim,
    class_histogram,
    conditional_accuracy,
    confident_fraction,
    digits_split,
    entropy,
    evaluate_samples,
    feature_statistics,
    frechet_distance,
    load_digits_classifier,
    precision_recall,
)
from jaxdiff.evaluation import classifier as classifier_module
from jaxdiff.schedules import make_schedule


# ----------------------------------------------------------------------------- Frechet distance
def test_frechet_distance_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_distance_full_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
    np.testing.assert_allclose(frechet_distance(mu1, c1, mu2, c2), expected, rtol=1e-8)


def test_frechet_distance_singular_commuting_covariances_match_closed_form():
    # Same eigenvectors, some eigenvalues 0: d = sum (sqrt(a_i) - sqrt(b_i))^2.
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(4, 4)))
    a, b = np.array([2.0, 1.0, 0.0, 0.0]), np.array([0.5, 0.0, 3.0, 0.0])
    c1, c2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(frechet_distance(np.zeros(4), c1, np.zeros(4), c2), expected,
                               atol=1e-9)


def test_frechet_distance_of_identical_rank_deficient_statistics_is_zero():
    x = np.random.default_rng(3).normal(size=(10, 32))  # 10 samples in 32 dims: rank 9
    mu, cov = feature_statistics(x)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_feature_statistics_match_numpy_mean_and_cov():
    x = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    mu, cov = feature_statistics(x)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)


@pytest.mark.parametrize("bad, error", [(np.zeros(5), ValueError),
                                        (np.full((4, 2), np.nan), ValueError),
                                        (np.zeros((1, 3)), ValueError)])
def test_feature_statistics_rejects_bad_features(bad, error):
    with pytest.raises(error):
        feature_statistics(bad)


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ----------------------------------------------------------------------------- precision/recall
def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(5).normal(size=(40, 8))
    assert precision_recall(x, x.copy(), k=3) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_of_far_apart_sets_is_zero():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 100.0
    assert precision_recall(real, fake) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_of_subset_covering_one_of_two_modes():
    rng = np.random.default_rng(7)
    mode_a, mode_b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3)) + 50.0
    result = precision_recall(np.concatenate([mode_a, mode_b]), mode_a, k=3)
    assert result == {"precision": 1.0, "recall": 0.5}


def test_precision_recall_on_a_line_matches_hand_computation():
    # k=1. Real radii are all 1; fake 0.3, 0.5, 3.9 lie within 1 of a real point, 5.0 does not.
    # Fake radii: 0.2, 0.2, 1.1, 1.1; only real 3 lies within (0.9 from 3.9).
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.3], [0.5], [3.9], [5.0]])
    result = precision_recall(real, fake, k=1)
    assert result["precision"] == pytest.approx(0.75)
    assert result["recall"] == pytest.approx(0.25)


def test_precision_recall_rejects_too_few_points_for_k():
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)


# ----------------------------------------------------------------------------- class statistics
def test_class_histogram_counts_predictions():
    hist = class_histogram(np.array([0, 2, 2, 9]), 10)
    np.testing.assert_array_equal(hist, [1, 0, 2, 0, 0, 0, 0, 0, 0, 1])


def test_class_histogram_rejects_out_of_range_predictions():
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        class_histogram(np.array([0, 10]), 10)


def test_entropy_in_bits_and_nats_matches_hand_computation():
    hist = np.array([1, 0, 2, 1])  # p = 1/4, 1/2, 1/4 -> 1.5 bits
    assert entropy(hist, "bits") == pytest.approx(1.5)
    assert entropy(hist, "nats") == pytest.approx(1.5 * math.log(2))
    assert entropy(np.ones(10), "bits") == pytest.approx(math.log2(10))


def test_entropy_rejects_unknown_unit():
    with pytest.raises(ValueError, match="unknown entropy unit 'decibans'"):
        entropy(np.ones(3), "decibans")


def test_confident_fraction_counts_max_probability_at_threshold():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    assert confident_fraction(probs, 0.9) == pytest.approx(0.5)


def test_conditional_accuracy_compares_predictions_with_requested_labels():
    assert conditional_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


# ----------------------------------------------------------------------------- evaluate_samples
def _mean_pool_features(images):
    return np.asarray(images).reshape(images.shape[0], -1)[:, :6]


def test_evaluate_samples_with_custom_extractor_and_no_classifier():
    rng = np.random.default_rng(8)
    real = rng.uniform(-1, 1, (30, 8, 8, 3)).astype(np.float32)
    result = evaluate_samples(real, real, extractor=_mean_pool_features)
    assert result["frechet_distance"] == pytest.approx(0.0, abs=1e-9)
    assert (result["precision"], result["recall"], result["feature_dim"]) == (1.0, 1.0, 6)
    assert "confident_fraction" not in result


def test_evaluate_samples_without_extractor_for_non_digit_images_raises():
    x = np.zeros((4, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="pass extractor="):
        evaluate_samples(x, x)


@pytest.mark.parametrize("bad, error", [(np.zeros((4, 8, 8)), ValueError),
                                        (np.zeros((4, 8, 8, 3), np.uint8), TypeError),
                                        (np.full((4, 8, 8, 3), np.inf, np.float32), ValueError)])
def test_evaluate_samples_rejects_bad_images(bad, error):
    real = np.zeros((4, 8, 8, 3), np.float32)
    with pytest.raises(error):
        evaluate_samples(bad, real, extractor=_mean_pool_features)


# ----------------------------------------------------------------------------- digits classifier
@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jaxdiff-cache")
    load_digits_classifier(cache)  # trains once (tens of seconds) and caches
    return cache


@pytest.fixture(scope="module")
def clf(classifier_cache):
    return load_digits_classifier(classifier_cache)


def test_digits_classifier_test_accuracy_is_at_least_97_percent(clf):
    x, y = digits_split("test")
    accuracy = float(np.mean(clf.predict(x) == y))
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(clf.test_accuracy)


def test_digits_classifier_features_and_logits_shapes(clf):
    x = digits_split("test")[0][:5]
    assert clf.features(x).shape == (5, 64)
    assert clf.logits(x).shape == (5, 10)
    np.testing.assert_allclose(clf.probabilities(x).sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad, error", [(np.zeros((2, 8, 8, 1), np.float32), ValueError),
                                        (np.zeros((16, 16, 1), np.float32), ValueError),
                                        (np.zeros((2, 16, 16, 1), np.int32), TypeError),
                                        (np.full((2, 16, 16, 1), np.nan, np.float32),
                                         ValueError)])
def test_digits_classifier_rejects_bad_images(clf, bad, error):
    with pytest.raises(error):
        clf.predict(bad)


def test_digits_classifier_cache_round_trip_gives_identical_weights(clf, classifier_cache):
    again = load_digits_classifier(classifier_cache)
    for a, b in zip(jax.tree.leaves(clf.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(a, b)


def test_corrupt_classifier_cache_is_rebuilt_with_warning(tmp_path, monkeypatch):
    model = classifier_module.DigitsCNN()
    params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
    stub = classifier_module.DigitsClassifier(params=jax.device_get(params), test_accuracy=0.5)
    monkeypatch.setattr(classifier_module, "train_digits_classifier", lambda: stub)
    path = classifier_module.cache_path(tmp_path)
    path.write_bytes(b"not an npz file")
    with pytest.warns(RuntimeWarning, match="could not be read"):
        rebuilt = load_digits_classifier(tmp_path)
    assert rebuilt.test_accuracy == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_digits_classifier(tmp_path).test_accuracy == 0.5  # the rewritten file reads


def test_real_train_split_is_close_to_test_split_and_noise_is_far(clf):
    train_x, train_y = digits_split("train")
    test_x, _ = digits_split("test")
    noise = np.random.default_rng(9).uniform(-1, 1, (500, 16, 16, 1)).astype(np.float32)
    common = {"extractor": clf.features, "classifier": clf}
    real = evaluate_samples(train_x[:500], test_x, requested_labels=train_y[:500], **common)
    fake = evaluate_samples(noise, test_x, **common)
    assert real["frechet_distance"] * 20 < fake["frechet_distance"]
    assert real["precision"] > 0.8 and real["recall"] > 0.8
    assert fake["precision"] < 0.05
    assert real["conditional_accuracy"] > 0.97
    assert real["class_entropy_bits"] > 3.2  # nearly uniform classes (max log2(10) = 3.32)
    assert real["confident_fraction"] > 0.9


def test_evaluate_samples_defaults_to_cached_digits_classifier(clf, classifier_cache,
                                                               monkeypatch):
    monkeypatch.setenv("JAXDIFF_CACHE", str(classifier_cache))
    test_x, _ = digits_split("test")
    result = evaluate_samples(test_x[:100], test_x)
    assert result["feature_dim"] == 64
    assert sum(result["class_histogram"]) == 100


def test_quality_digits_benchmark_reads_npz_and_writes_json(clf, classifier_cache, tmp_path,
                                                            capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # the repo root
    from benchmarks import quality_digits

    x, y = digits_split("train")
    np.savez(tmp_path / "samples.npz", images=x[:200], labels=y[:200])
    out = tmp_path / "out" / "result.json"
    code = quality_digits.main(["--npz", str(tmp_path / "samples.npz"), "--cache-dir",
                                str(classifier_cache), "--json", str(out)])
    assert code == 0
    assert "| Frechet distance" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["samples"]["conditional_accuracy"] > 0.97
    assert result["real_train"]["num_samples"] == 200


# ----------------------------------------------------------------------------- bits per dim
def _gaussian_data(rng, shape, mu, s):
    x = np.clip(rng.normal(mu, s, shape), -1, 1)
    x = np.round((x + 1) * 127.5) / 127.5 - 1  # on the 256-level grid
    x.flat[0], x.flat[1] = -1.0, 1.0  # exercise both edge bins
    return x


def _reference_bpd(x0, betas, noise, indices, mu, s, variance, clip, bias=0.0):
    """DDPM bound (Ho et al. eq. 5) in float64, written independently of jaxdiff."""
    T = betas.size
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_var_clipped = np.append(post_var[1], post_var[1:])
    model_var = np.append(post_var[1], betas[1:]) if variance == "fixedlarge" else post_var_clipped
    D = x0[0].size

    def kl(m1, v1, m2, v2):  # KL(N(m1, v1) || N(m2, v2)), nats
        return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)

    terms = []
    for j, i in enumerate(indices):
        a, sig = np.sqrt(abar[i]), np.sqrt(1 - abar[i])
        x_t = a * x0 + sig * noise[j]
        # Exact E[x0 | x_t] for x0 ~ N(mu, s^2) per pixel, then the model's eps and x0.
        x0_hat = mu + a * s ** 2 / (a ** 2 * s ** 2 + sig ** 2) * (x_t - a * mu)
        eps_hat = (x_t - a * x0_hat) / sig + bias
        pred_x0 = (x_t - sig * eps_hat) / a
        if clip:
            pred_x0 = np.clip(pred_x0, -1, 1)
        c1 = np.sqrt(abar_prev[i]) * betas[i] / (1 - abar[i])
        c2 = np.sqrt(alphas[i]) * (1 - abar_prev[i]) / (1 - abar[i])
        model_mean = c1 * pred_x0 + c2 * x_t
        if i == 0:
            std = np.sqrt(model_var[0])
            hi = scipy.stats.norm.cdf((x0 + 1 / 255 - model_mean) / std)
            lo = scipy.stats.norm.cdf((x0 - 1 / 255 - model_mean) / std)
            p = np.where(x0 < -0.999, hi, np.where(x0 > 0.999, 1 - lo, hi - lo))
            value = -np.log(p)
        else:
            value = kl(c1 * x0 + c2 * x_t, post_var_clipped[i], model_mean, model_var[i])
        terms.append(value.reshape(x0.shape[0], -1).sum(1) / (D * np.log(2)))
    terms = np.stack(terms, 1)
    prior = kl(np.sqrt(abar[-1]) * x0, 1 - abar[-1], 0.0, 1.0)
    prior = prior.reshape(x0.shape[0], -1).sum(1) / (D * np.log(2))
    kl_sum = terms[:, 1:].sum(1) * (T - 1) / (len(indices) - 1)
    return prior + kl_sum + terms[:, 0], terms


def _exact_gaussian_eps_model(schedule, mu, s, bias=0.0):
    """The exact eps prediction for x0 ~ N(mu, s^2) per pixel, plus an optional bias."""

    def model_fn(x_t, t):
        a = schedule.sqrt_alphas_cumprod[t][:, None, None, None]
        sig = schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]
        x0_hat = mu + a * s ** 2 / (a ** 2 * s ** 2 + sig ** 2) * (x_t - a * mu)
        return (x_t - a * x0_hat) / sig + bias
    return model_fn


@pytest.mark.parametrize("variance", ["fixedlarge", "fixedsmall"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("bias", [0.0, 0.4])
def test_bits_per_dim_matches_float64_reference_for_gaussian_denoiser(variance, clip, bias):
    # bias=0: the exact denoiser; bias=0.4: a wrong one whose x0 predictions leave [-1, 1].
    T, mu, s = 20, 0.2, 0.3
    betas = np.linspace(1e-3, 0.3, T)
    schedule = make_schedule("linear", T, beta_start=1e-3, beta_end=0.3)
    rng = np.random.default_rng(10)
    x0 = _gaussian_data(rng, (3, 4, 4, 1), mu, s)
    noise = rng.normal(size=(T,) + x0.shape)
    got = bits_per_dim(_exact_gaussian_eps_model(schedule, mu, s, bias), schedule,
                       jnp.asarray(x0, jnp.float32), noise=jnp.asarray(noise, jnp.float32),
                       variance=variance, clip_denoised=clip)
    total, terms = _reference_bpd(x0, betas, noise, np.arange(T), mu, s, variance, clip, bias)
    np.testing.assert_array_equal(got["indices"], np.arange(T))
    np.testing.assert_allclose(got["terms"], terms, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["total"], total, rtol=1e-5)


def test_bits_per_dim_subsampled_terms_are_weighted_by_t_minus_1_over_k():
    T, mu, s, K = 20, 0.0, 0.4, 5
    betas = np.linspace(1e-3, 0.3, T)
    schedule = make_schedule("linear", T, beta_start=1e-3, beta_end=0.3)
    rng = np.random.default_rng(11)
    x0 = _gaussian_data(rng, (2, 4, 4, 1), mu, s)
    indices = np.concatenate([[0], np.round(np.linspace(1, T - 1, K)).astype(int)])
    noise = rng.normal(size=(K + 1,) + x0.shape)
    got = bits_per_dim(_exact_gaussian_eps_model(schedule, mu, s), schedule,
                       jnp.asarray(x0, jnp.float32), noise=jnp.asarray(noise, jnp.float32),
                       num_terms=K)
    total, _ = _reference_bpd(x0, betas, noise, indices, mu, s, "fixedlarge", True)
    np.testing.assert_array_equal(got["indices"], indices)
    np.testing.assert_allclose(got["total"], total, rtol=1e-5)


def test_bits_per_dim_rejects_bad_arguments():
    schedule = make_schedule("linear", 10)
    x0 = jnp.zeros((2, 4, 4, 1))
    model_fn = _exact_gaussian_eps_model(schedule, 0.0, 0.5)
    with pytest.raises(ValueError, match="needs `key`"):
        bits_per_dim(model_fn, schedule, x0)
    with pytest.raises(ValueError, match="num_terms"):
        bits_per_dim(model_fn, schedule, x0, key=jax.random.key(0), num_terms=10)
    with pytest.raises(ValueError, match="unknown model variance"):
        bits_per_dim(model_fn, schedule, x0, key=jax.random.key(0), variance="learned")


def test_evaluate_samples_clips_to_unit_range_and_reports_out_of_range_fraction():
    real = np.random.default_rng(12).uniform(-1, 1, (30, 8, 8, 3)).astype(np.float32)
    wild = real.copy()
    wild[:, 0, 0, 0] = 50.0 * np.sign(real[:, 0, 0, 0])  # 1 pixel in 192 per image
    result = evaluate_samples(wild, real, extractor=_mean_pool_features)
    assert result["out_of_range_fraction"] == pytest.approx(1 / 192)
    clipped = np.clip(wild, -1, 1)
    expected = evaluate_samples(clipped, real, extractor=_mean_pool_features)
    assert result["frechet_distance"] == pytest.approx(expected["frechet_distance"])
