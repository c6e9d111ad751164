"""The OpenVINO graphs are read by OpenVINO's runtime, not ``openvino.convert_model``: the converter sends usage
telemetry (openvino-telemetry forks a process that resolves Google Analytics; offline, that child hung a test process
at exit), and st-oblique promises that nothing leaves the machine."""

from __future__ import annotations

import pytest
import torch

import st_oblique

openvino = pytest.importorskip("openvino")


def test_export_to_openvino_never_calls_the_converter(family_model, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("openvino.convert_model was called (it sends telemetry)")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    model = family_model("bert").eval()
    st_oblique.export(model, tmp_path / "exported", format="openvino")
    loaded = st_oblique.load(str(tmp_path / "exported"), backend="openvino")
    texts = ["a dog runs on the grass", "two people"]
    expected = model.encode(texts, convert_to_tensor=True)
    assert torch.allclose(loaded.encode(texts, convert_to_tensor=True), expected, atol=1e-4)
