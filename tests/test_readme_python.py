"""The README's Python snippets run as written, with the Hub model and the shared data swapped for tiny local ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tiny_models import SENTENCES, tiny_clip, tiny_data_root, tiny_images, tiny_oblique_clip

import st_oblique

REPO_ROOT = Path(__file__).resolve().parents[1]

SNIPPETS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def run_snippet(code: str, namespace: dict, replacements: dict[str, str]) -> None:
    for original, local in replacements.items():
        assert original in code, f"the README snippet no longer mentions {original!r}: update this test"
        code = code.replace(original, local)
    exec(compile(code, "README.md", "exec"), namespace)


def test_readme_has_the_quickstart_training_and_evaluation_snippets():
    assert len(SNIPPETS) == 6
    assert "oblique_text_model" in SNIPPETS[0] and "SentenceTransformerTrainer" in SNIPPETS[1]
    assert "zeroshot_classification" in SNIPPETS[2] and "ObliqueMatryoshkaLoss" in SNIPPETS[3]
    assert 'token_source="class_attention"' in SNIPPETS[4]
    assert 'backend="openvino"' in SNIPPETS[5] and "st_oblique.export(" in SNIPPETS[5]


def test_quickstart_and_training_snippets(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the snippets save and train into the working folder
    namespace: dict = {}
    run_snippet(SNIPPETS[0], namespace, {"sentence-transformers/all-MiniLM-L6-v2": tiny_bert_dir})
    assert "tensor(" in capsys.readouterr().out
    model = namespace["model"]
    assert model.similarity_fn_name == "dot" and namespace["embeddings"].shape == (2, 16 * 32)
    assert (tmp_path / "oblique-minilm" / "modules.json").is_file()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    run_snippet(SNIPPETS[1], namespace, {})
    assert any(not parameter.equal(before[name]) for name, parameter in model.named_parameters())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_evaluation_snippet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = tiny_oblique_clip(tiny_clip(tmp_path / "clip"), num_tokens=4, token_dim=8)
    model.save(str(tmp_path / "lit"))
    (tmp_path / "data").mkdir()
    data_root = tiny_data_root(tmp_path / "data")
    namespace: dict = {"st_oblique": st_oblique}  # imported by the quickstart snippet before this one
    run_snippet(SNIPPETS[2], namespace, {"runs/lit-oblique": str(tmp_path / "lit"), "../shared/data": str(data_root)})
    printed = capsys.readouterr().out
    assert "acc1" in printed and "mean_per_class_recall" in printed
    meta = namespace["wrapped"].mteb_model_meta
    assert meta.name == "my-org/oblique-clip" and set(meta.modalities) == {"image", "text"}


def test_fewer_tokens_and_explanations_snippet(tiny_bert_dir, tmp_path, capsys):
    st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=16, token_dim=32).save(str(tmp_path / "oblique"))
    namespace: dict = {"st_oblique": st_oblique}  # imported by the quickstart snippet before this one
    run_snippet(SNIPPETS[3], namespace, {'"oblique-minilm"': repr(str(tmp_path / "oblique"))})
    assert namespace["short"].shape == (1, 4 * 32)
    assert namespace["loss"].token_counts == [1, 2, 4, 8, 16]
    printed = capsys.readouterr().out
    assert "sum of 16 token cosines" in printed and "effective rank" in printed.lower()


def test_late_class_tokens_snippet(tiny_bert_dir):
    namespace: dict = {"st_oblique": st_oblique}  # imported by the quickstart snippet before this one
    run_snippet(SNIPPETS[4], namespace, {"sentence-transformers/all-MiniLM-L6-v2": tiny_bert_dir})
    assert namespace["embeddings"].shape == (2, 16 * 32)
    fast, warm = namespace["fast"][1], namespace["warm"][1]
    assert fast.token_source == warm.token_source == "class_attention"
    assert (fast.class_attention_width, warm.class_attention_width) == (32, 384)  # 128 capped at the tiny width


@pytest.mark.slow  # exports a tiny model twice (tracing takes seconds per graph)
def test_serving_on_cpu_snippet(tmp_path, monkeypatch):
    """The "Serving on CPU" snippet as written, on a tiny image-text model standing in for the LiT run and its export by
    the README's `st-oblique export runs/lit-oblique --format onnx openvino --quantize int8 ...` (run by
    tests/cli/test_readme.py)."""
    monkeypatch.chdir(tmp_path)
    model = st_oblique.oblique_clip(tiny_clip(tmp_path / "clip"), num_tokens=8, token_dim=32, device="cpu").eval()
    model.save("runs/lit-oblique")
    st_oblique.export(model, "runs/lit-oblique-cpu", format=["onnx", "openvino"], quantize="int8",
                      calibration={"text": SENTENCES * 4, "image": tiny_images(16, seed=1)})
    namespace: dict = {}
    run_snippet(SNIPPETS[5], namespace, {})
    assert (namespace["model"][0].backend, namespace["model"][0].variant) == ("onnx", "qint8")  # the folder's default
    exact = namespace["exact"]
    assert (exact[0].backend, exact[0].variant) == ("onnx", "fp32")
    texts = ["a dog runs on the beach", *SENTENCES]
    reference = model.encode(texts, convert_to_tensor=True)
    assert float((exact.encode(texts, convert_to_tensor=True) - reference).abs().max()) <= 1e-4
    assert namespace["embeddings"].shape == (1, 4 * 32)  # 4 whole tokens of the 8
    assert (tmp_path / "lit-onnx" / "onnx" / "model_image_qint8.onnx").is_file()
