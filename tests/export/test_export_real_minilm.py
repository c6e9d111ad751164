"""The real all-MiniLM-L6-v2 (../shared/weights) as an oblique model (K=16, d=32): its fp32 ONNX and OpenVINO graphs
equal torch to 1e-4 per coordinate on 64 STSb test sentences."""

from __future__ import annotations

import pytest
import torch

import st_oblique

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def stsb_sentences(shared, count: int) -> list[str]:
    sentences: list[str] = []
    with open(shared / "data" / "stsbenchmark" / "stsbenchmark" / "sts-test.csv", encoding="utf-8") as handle:
        for line in handle:
            sentences += line.rstrip("\n").split("\t")[5:7]
            if len(sentences) >= count:
                return sentences[:count]
    return sentences


def test_real_minilm_fp32_graphs_equal_torch(shared, tmp_path):
    weights = shared / "weights" / "all-MiniLM-L6-v2"
    if not (weights / "config.json").exists():
        pytest.skip(f"all-MiniLM-L6-v2 is not at {weights} (see ../shared/README.md)")
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(str(weights), num_tokens=16, token_dim=32, device="cpu").eval()
    folder = tmp_path / "minilm"
    st_oblique.export(model, folder, format=["onnx", "openvino"])
    sentences = stsb_sentences(shared, 64)
    assert len(sentences) == 64
    expected = model.encode(sentences, convert_to_tensor=True)
    for backend in ("onnx", "openvino"):
        loaded = st_oblique.load(str(folder), backend=backend)
        actual = loaded.encode(sentences, convert_to_tensor=True)
        difference = float((actual - expected).abs().max())
        assert difference <= 1e-4, f"{backend}: {difference:.2e}"
        scores = loaded.similarity(actual, actual)  # sums of 16 cosines, as the torch model scores them
        torch.testing.assert_close(scores, model.similarity(expected, expected), atol=16e-4, rtol=0)
