"""The clip-mtob converter: sizes from shapes, clear errors, the saved folder (card, source file, loading with
st-oblique and plain ST, save/load), the command and the fake Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clip_mtob.oracle import TOLERANCE, TRICKY_TEXTS, VARIANTS, build_official, max_diff, official_embeddings
from hub.fake_hub import WRITE_TOKEN, FakeHub, point_huggingface_hub_at
from sentence_transformers import SentenceTransformer

import st_oblique
from st_oblique.app.cli import main
from st_oblique.converters import ClipMtobCheckpointError, convert_clip_mtob

pytestmark = pytest.mark.shared
TESTS = Path(__file__).resolve().parents[1]


def test_sizes_are_read_from_the_shapes(converted):
    sizes = json.loads((converted["mtob"] / "clip_mtob_source.json").read_text())["sizes"]
    assert sizes == {
        "num_class_tokens": 16, "token_dim": 8, "image_size": 224, "patch_size": 32,
        "vision_width": 64, "vision_layers": 2, "vision_heads": 1, "vision_mlp_width": 256,
        "text_width": 64, "text_layers": 2, "text_heads": 1, "text_mlp_width": 256,
        "context_length": 77, "vocab_size": 30522,
    }  # fmt: skip
    assert json.loads((converted["ref"] / "clip_mtob_source.json").read_text())["sizes"]["num_class_tokens"] == 1


class _Tower(torch.nn.Module):
    def __init__(self, config=None):
        super().__init__()
        self.embeddings = torch.nn.Embedding(4, 2)
        self.norm = torch.nn.LayerNorm(2)


class _TowerInside(torch.nn.Module):
    def __init__(self, config=None):
        super().__init__()
        self.vision_model = _Tower()


@pytest.mark.parametrize(("model_class", "prefix"), [(_Tower, ""), (_TowerInside, "vision_model.")])
def test_backbone_weights_take_the_models_own_names(model_class, prefix, tmp_path):
    """The tower's weights get the prefix the model's own state_dict puts before them: transformers 5.0's
    CLIPVisionModel holds its tower as ``vision_model`` (_TowerInside), later versions' is the tower (_Tower)."""
    from safetensors.torch import load_file
    from transformers import BertConfig

    from st_oblique.converters.clip_mtob import _write_backbone

    weights = {"embeddings.weight": torch.randn(4, 2), "norm.weight": torch.randn(2), "norm.bias": torch.randn(2)}
    _write_backbone(model_class, BertConfig(), weights, tmp_path / "fits", anchor="embeddings.weight")
    saved = load_file(tmp_path / "fits" / "model.safetensors")
    assert sorted(saved) == sorted(model_class().state_dict()) == sorted(prefix + key for key in weights)
    assert all(torch.equal(saved[prefix + key], value) for key, value in weights.items())
    with pytest.raises(RuntimeError, match=rf"does not fit transformers' {model_class.__name__}: \['{prefix}extra'\]"):
        extra = {**weights, "extra": torch.zeros(1)}
        _write_backbone(model_class, BertConfig(), extra, tmp_path / "x", anchor="embeddings.weight")
    with pytest.raises(RuntimeError, match=r"has 0 tensors named like 'missing\.weight'"):
        _write_backbone(model_class, BertConfig(), weights, tmp_path / "y", anchor="missing.weight")


def test_other_sizes_and_text_heads(official, tmp_path):
    """3 image layers of width 128 (2 heads), 1 text layer of width 128 with 4 heads, patch 16 at 224 px: the
    parity holds with text_heads=4 and breaks with the default (2), so the head count really is used."""
    model = build_official(
        official, "mtob", seed=3, vision_layers=3, vision_width=128, vision_patch_size=16, transformer_width=128,
        transformer_layers=1, transformer_heads=4,
    )  # fmt: skip
    checkpoint = tmp_path / "other.pt"
    torch.save(model.state_dict(), checkpoint)
    expected = official_embeddings(model, official, texts=TRICKY_TEXTS[:3])
    right = convert_clip_mtob(checkpoint, official.vocab, text_heads=4)
    wrong = convert_clip_mtob(checkpoint, official.vocab)
    sizes = right.clip_mtob_source.sizes
    assert (sizes["vision_layers"], sizes["vision_heads"], sizes["patch_size"], sizes["text_layers"]) == (3, 2, 16, 1)

    def encode(converted_model):
        return converted_model.encode(TRICKY_TEXTS[:3], convert_to_tensor=True).reshape(3, 16, 8)

    assert max_diff("text, 4 heads", encode(right), expected) <= TOLERANCE
    assert max_diff("text, default 2 heads", encode(wrong), expected) > 1e-3


def test_not_a_clip_mtob_checkpoint(official, tmp_path, checkpoints):
    other = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 4).state_dict(), other)
    with pytest.raises(ClipMtobCheckpointError, match="is not a checkpoint of the official clip-mtob CLIP"):
        convert_clip_mtob(other, official.vocab)

    state = torch.load(checkpoints["mtob"], weights_only=True)
    del state["transformer.encoder.layers.1.norm2.bias"]
    state["extra.weight"] = torch.zeros(1)
    damaged = tmp_path / "damaged.pt"
    torch.save(state, damaged)
    with pytest.raises(
        ClipMtobCheckpointError,
        match=r"missing \['transformer.encoder.layers.1.norm2.bias'\]; unexpected \['extra.weight'\]",
    ):
        convert_clip_mtob(damaged, official.vocab)
    del state["ln_final.weight"]
    torch.save(state, damaged)
    with pytest.raises(ClipMtobCheckpointError, match=r"it lacks \['ln_final.weight'\]"):
        convert_clip_mtob(damaged, official.vocab)

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ClipMtobCheckpointError, match="is not a PyTorch checkpoint of tensors"):
        convert_clip_mtob(text, official.vocab)

    short_vocab = tmp_path / "vocab.txt"
    short_vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(ClipMtobCheckpointError, match="has 5 tokens but the checkpoint's token_embedding has 30522"):
        convert_clip_mtob(checkpoints["mtob"], short_vocab)
    with pytest.raises(FileNotFoundError, match="No WordPiece vocabulary"):
        convert_clip_mtob(checkpoints["mtob"], tmp_path / "missing")


def test_folder_loads_with_st_oblique_and_plain_st_and_resaves(converted, photos, tmp_path):
    path = str(converted["mtob"])
    ours = st_oblique.load(path, device="cpu")
    plain = SentenceTransformer(path, trust_remote_code=True, device="cpu")
    assert ours.similarity_fn_name == plain.similarity_fn_name == "dot"
    texts = TRICKY_TEXTS[:3]
    reference = {
        "texts": ours.encode(texts, convert_to_tensor=True),
        "images": ours.encode(photos[:2], convert_to_tensor=True),
    }
    torch.testing.assert_close(plain.encode(texts, convert_to_tensor=True), reference["texts"], atol=1e-6, rtol=0)
    torch.testing.assert_close(plain.encode(photos[:2], convert_to_tensor=True), reference["images"], atol=1e-6, rtol=0)

    ours.save(str(tmp_path / "again"))
    again = st_oblique.load(str(tmp_path / "again"), device="cpu")
    torch.testing.assert_close(again.encode(texts, convert_to_tensor=True), reference["texts"], atol=1e-6, rtol=0)
    torch.testing.assert_close(again.encode(photos[:2], convert_to_tensor=True), reference["images"], atol=1e-6, rtol=0)
    assert "### Converted from the paper's release" in (tmp_path / "again" / "README.md").read_text()


def test_card_says_where_the_model_came_from(converted, checkpoints):
    import hashlib

    card = (converted["mtob"] / "README.md").read_text(encoding="utf-8")
    source = json.loads((converted["mtob"] / "clip_mtob_source.json").read_text())
    sha256 = hashlib.sha256(checkpoints["mtob"].read_bytes()).hexdigest()
    assert source["sha256"] == sha256 and source["checkpoint"] == "mtob.pt" and source["variant"] == "oblique"
    for expected in (sha256, "`mtob.pt`", "arXiv 2209.02127", "github.com/minogame/clip-mtob", "**Licence:** MIT",
                     "license: mit", "K = 16, d = 8", "Similarity Function:** Dot Product"):  # fmt: skip
        assert expected in card, expected
    assert source["logit_scale"] == pytest.approx(float(torch.load(checkpoints["mtob"])["logit_scale"].exp()))


def test_command(official, checkpoints, tmp_path, capsys):
    output = tmp_path / "converted"
    argv = ["convert", "clip-mtob", "--checkpoint", str(checkpoints["ref"]), "--vocab", str(official.vocab)]
    assert main([*argv, "--output", str(output)]) == 0
    assert "sphere model, K=1 tokens of d=16" in capsys.readouterr().out
    assert st_oblique.load(str(output), device="cpu").get_embedding_dimension() == 16
    assert main([*argv, "--output", str(output)]) == 2  # exists: refused before any work
    assert "exists and is not empty" in capsys.readouterr().err

    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    failed = tmp_path / "failed"
    assert (
        main(
            ["convert", "clip-mtob", "--checkpoint", str(bad), "--vocab", str(official.vocab), "--output", str(failed)]
        )
        == 2
    )
    assert "is not a checkpoint of the official clip-mtob CLIP" in capsys.readouterr().err
    assert not failed.exists() and not list(tmp_path.glob(".failed.partial-*"))
    assert main(["convert", "clip-mtob", "--vocab", str(official.vocab)]) == 2
    assert "needs --checkpoint, --output" in capsys.readouterr().err


LOAD_FROM_HUB = """
import json, sys, torch
import st_oblique
from sentence_transformers import SentenceTransformer
repo, out = sys.argv[1], sys.argv[2]
ours = st_oblique.load(repo, device="cpu")
plain = SentenceTransformer(repo, trust_remote_code=True, device="cpu")
texts = json.loads(sys.argv[3])
torch.save({"ours": ours.encode(texts, convert_to_tensor=True), "plain": plain.encode(texts, convert_to_tensor=True),
            "similarity": [ours.similarity_fn_name, plain.similarity_fn_name]}, out)
"""


def test_fake_hub_round_trip(converted, monkeypatch, tmp_path):
    """Pushed with st_oblique.push_to_hub, loaded by repo id in a fresh process (transformers reads the Hub
    settings at import) with st_oblique.load and plain ST: the same embeddings as the local folder."""
    texts = TRICKY_TEXTS[:3]
    local = st_oblique.load(str(converted["mtob"]), device="cpu").encode(texts, convert_to_tensor=True)
    with FakeHub(tokens={WRITE_TOKEN: "write"}) as hub:
        point_huggingface_hub_at(monkeypatch, hub.url, str(tmp_path / "push_cache"))
        st_oblique.push_to_hub(str(converted["mtob"]), "user/clip-mtob-small", token=WRITE_TOKEN)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="0", HF_TOKEN=WRITE_TOKEN,
                   HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-c", LOAD_FROM_HUB, "user/clip-mtob-small", str(tmp_path / "loaded.pt"), json.dumps(texts)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = torch.load(tmp_path / "loaded.pt")
    assert loaded["similarity"] == ["dot", "dot"]
    torch.testing.assert_close(loaded["ours"], local, atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded["plain"], local, atol=1e-6, rtol=0)
    assert VARIANTS["mtob"] == (16, 8)
