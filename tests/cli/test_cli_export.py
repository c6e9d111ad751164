"""``st-oblique export``: a trained folder to ONNX + OpenVINO (int8 included), and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from cli.cli_helpers import partial_folders
from tiny_models import SENTENCES

import st_oblique


@pytest.mark.slow
def test_export_command(cli, text_run, tmp_path):
    calibration = tmp_path / "texts.txt"
    calibration.write_text("\n".join(SENTENCES * 4) + "\n")
    output = tmp_path / "cpu"
    result = cli("export", text_run, "--format", "onnx", "openvino", "--quantize", "int8", "--calibration",
                 calibration, "--output", output)
    assert result.code == 0, result.err
    assert f"Exported {text_run} to {output}" in result.out
    for line in ("onnx fp32: onnx/model_text.onnx", "onnx qint8: onnx/model_text_qint8.onnx",
                 "openvino fp32: openvino/openvino_model_text.xml", "openvino qint8: openvino/openvino_model_text_qint8.xml"):
        assert line in result.out
    config = json.loads((output / "oblique_export_config.json").read_text())
    assert config["default_variant"] == "qint8" and set(config["graphs"]) == {"onnx", "openvino"}
    torch_model = st_oblique.load(str(text_run), device="cpu")
    expected = torch_model.encode(SENTENCES, convert_to_tensor=True)
    exact = st_oblique.load(str(output), backend="openvino", model_kwargs={"file_name": "openvino_model_text.xml"})
    torch.testing.assert_close(exact.encode(SENTENCES, convert_to_tensor=True), expected, atol=1e-4, rtol=0)
    result = cli("info", output)  # the exported folder describes itself like the model it came from
    assert result.code == 0 and "ExportedObliqueEncoder" in result.out and "token_source=" in result.out


def test_export_command_errors(cli, text_run, tmp_path):
    result = cli("export", text_run)
    assert result.code == 2 and result.error_lines == ["st-oblique export: error: st-oblique export needs --output "
                                                       "(the folder to write)."]
    output = tmp_path / "out"
    result = cli("export", text_run, "--format", "openvino", "--quantize", "int8", "--output", output)
    assert result.code == 2 and "calibration" in result.error_lines[0] and len(result.error_lines) == 1
    assert not output.exists() and partial_folders(tmp_path) == []
    result = cli("export", tmp_path / "no-model", "--output", output)
    assert result.code == 2 and "Model not found" in result.err
    result = cli("export", text_run, "--format", "tensorrt", "--output", output)
    assert result.code == 2 and "invalid choice: 'tensorrt'" in result.err
