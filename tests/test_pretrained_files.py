"""`jaxdiff.pretrained.files.SafetensorsTensors`: safetensors files read tensor by tensor, against
the safetensors library's own readers; damaged files refused when opened."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdiff.pretrained import WeightsError
from jaxdiff.pretrained.files import SafetensorsTensors, read_weights

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _mixed(path):
    gen = torch.Generator().manual_seed(0)
    tensors = {"conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
               "half": torch.randn(5, 7, generator=gen).half(),
               "brain": torch.randn(6, 2, generator=gen).bfloat16(),
               "ids": torch.arange(12).reshape(3, 4),
               "flags": torch.tensor([True, False, True]),
               "scalar": torch.tensor(2.5)}
    safetensors_torch.save_file(tensors, str(path))
    return tensors


def test_every_dtype_reads_as_safetensors_writes_it(tmp_path):
    tensors = _mixed(tmp_path / "w.safetensors")
    read = SafetensorsTensors([tmp_path / "w.safetensors"])
    assert sorted(read) == sorted(tensors)
    for name, value in tensors.items():
        want = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        got = read[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cut, fragment", [(slice(None, -40), "ends at byte"),
                                           (slice(None, 6), "header length"),
                                           (slice(None, 30), "header length")])
def test_truncated_file_is_refused_when_opened(tmp_path, cut, fragment):
    path = tmp_path / "w.safetensors"
    _mixed(path)
    path.write_bytes(path.read_bytes()[cut])
    with pytest.raises(WeightsError, match=f"{fragment}.*damaged or truncated"):
        SafetensorsTensors([path])


def test_garbled_header_is_refused_when_opened(tmp_path):
    path = tmp_path / "w.safetensors"
    _mixed(path)
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff" * 12
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="header is not readable JSON.*damaged or truncated"):
        SafetensorsTensors([path])


def test_shards_read_as_one_mapping_and_a_tensor_stored_twice_is_refused(tmp_path):
    safetensors_torch.save_file({"a": torch.ones(2)}, str(tmp_path / "s1.safetensors"))
    safetensors_torch.save_file({"b": torch.zeros(3)}, str(tmp_path / "s2.safetensors"))
    both = SafetensorsTensors([tmp_path / "s1.safetensors", tmp_path / "s2.safetensors"])
    assert sorted(both) == ["a", "b"] and both["b"].shape == (3,)
    safetensors_torch.save_file({"a": torch.ones(2)}, str(tmp_path / "s3.safetensors"))
    with pytest.raises(WeightsError, match="'a' is stored twice"):
        SafetensorsTensors([tmp_path / "s1.safetensors", tmp_path / "s3.safetensors"])


def test_read_weights_does_not_read_tensors_until_asked(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    _mixed(tmp_path / "model.safetensors")
    calls = []
    original = np.fromfile
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: calls.append(1) or original(*a, **k))
    tensors = read_weights(tmp_path)
    assert calls == [] and len(tensors) == 6
    tensors["half"]
    assert calls == [1]
