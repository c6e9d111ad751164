"""push_to_hub -> load by repo id in a fresh process, against the fake Hub on 127.0.0.1 (no internet)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub.fake_hub import WRITE_TOKEN, FakeHub
from hub.hub_worker import (
    CLIP_REPO,
    FUTURE_CONFIG_REPO,
    FUTURE_REQUIREMENT_REPO,
    TEXT_BRANCH,
    TEXT_LOGIT_SCALE,
    TEXT_REPO,
)
from huggingface_hub import ModelCard

from st_oblique.model.sentence_transformer import MIN_READER_VERSION

TESTS = Path(__file__).resolve().parents[1]


def hub_env(url: str, home: Path, *extra_paths: Path, token: str | None = WRITE_TOKEN) -> dict[str, str]:
    """The environment of a process that talks to the fake Hub (huggingface_hub reads it at import)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=url,
        HF_HOME=str(home),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([*map(str, extra_paths), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    if token:
        env["HF_TOKEN"] = token
    return env


def run_worker(step: str, workdir: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(TESTS / "hub" / "hub_worker.py"), step, str(workdir)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"hub_worker {step} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Push from one process, load from another; returns (hub, workdir, pushed report, loaded report)."""
    workdir = tmp_path_factory.mktemp("hub_round_trip")
    with FakeHub(tokens={WRITE_TOKEN: "write"}) as hub:
        run_worker("push", workdir, hub_env(hub.url, workdir / "hf_home_push"))
        pushed = json.loads((workdir / "pushed.json").read_text())
        run_worker("load", workdir, hub_env(hub.url, workdir / "hf_home_load", TESTS / "hub" / "without_st_oblique"))
        loaded = json.loads((workdir / "loaded.json").read_text())
        yield hub, workdir, pushed, loaded


def test_without_st_oblique_loading_says_pip_install(round_trip):
    _, _, _, loaded = round_trip
    for source in ("hub", "folder"):
        message = loaded["without_st_oblique"][source]
        assert f'pip install -U "st-oblique>={MIN_READER_VERSION}"' in message, message
        assert "it is not installed" in message


def test_loaded_models_give_identical_embeddings(round_trip):
    _, workdir, _, _ = round_trip
    loaded = torch.load(workdir / "loaded.pt")
    clip, text = torch.load(workdir / "clip_reference.pt"), torch.load(workdir / "text_reference.pt")
    torch.testing.assert_close(loaded["clip_images"], clip["images"], atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded["clip_texts"], clip["texts"], atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded["plain_clip_texts"], clip["texts"], atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded["text_texts"], text["texts"], atol=1e-6, rtol=0)
    assert clip["images"].shape == (3, 32) and text["texts"].shape[1] == 32


def test_similarity_is_dot_after_loading(round_trip):
    _, _, _, loaded = round_trip
    assert loaded["similarity_fn_names"] == ["dot", "dot", "dot"]


def test_push_went_through_the_fake_hub(round_trip):
    hub, _, pushed, _ = round_trip
    assert pushed["clip_url"].startswith(f"{hub.url}/{CLIP_REPO}/commit/")
    assert pushed["text_url"].startswith(f"{hub.url}/{TEXT_REPO}/commit/")
    clip_files = hub.files(CLIP_REPO)
    assert {"README.md", "modules.json", "config_sentence_transformers.json", "1_ObliquePooling/model.safetensors"} <= set(clip_files)
    assert any(path.startswith("assets/") for path in clip_files), "the card's example images were not uploaded"
    assert hub.repos[TEXT_REPO].private
    assert set(hub.files(TEXT_REPO, "main")) == {".gitattributes"}, "the branch push must not touch main"
    assert "README.md" in hub.files(TEXT_REPO, TEXT_BRANCH)
    commit = hub.repos[TEXT_REPO].resolve(TEXT_BRANCH)
    assert commit.message == "Upload oblique model (K=4, d=8): sts spearman=0.5"
    # Only the documented "not implemented" call: huggingface_hub's daily agent-registry lookup.
    assert {path for _, path in hub.unhandled} <= {"/api/agent-harnesses"}


@pytest.mark.parametrize("repo", [CLIP_REPO, TEXT_REPO])
def test_card_has_a_valid_header_and_the_oblique_section(round_trip, repo):
    _, _, pushed, loaded = round_trip
    readme = loaded["readmes"][repo]
    card = ModelCard(readme)  # huggingface_hub's parser: raises on an invalid YAML header
    assert {"st-oblique", "oblique-manifold", "modality:text", "sentence-transformers"} <= set(card.data.tags)
    assert card.data.library_name == "sentence-transformers"
    assert "### Oblique Embedding" in readme
    assert "K = 4 tokens of d = 8 dimensions" in readme
    assert "in [-4, 4]" in readme and 'similarity_fn_name="dot"' in readme
    assert "pip install -U st-oblique" in readme
    assert f'ObliqueSentenceTransformer("{repo}")' in readme
    assert "Training loss:** `ObliqueContrastiveLoss`" in readme
    assert "@article{sun2022design" in readme
    if repo == CLIP_REPO:
        assert "modality:image" in card.data.tags
        assert "| text | CLIPModel |" in readme and "| image | CLIPModel |" in readme
        scale = pushed["clip_logit_scale"]
        assert f"inverse temperature):** {format(scale, '.4g')} (fixed)" in readme  # the model's, never trained
    else:
        assert "| text | BertModel | `first` | 4 class tokens at the front" in readme
        assert f"inverse temperature):** {TEXT_LOGIT_SCALE:.4g} (fixed) (temperature {1 / TEXT_LOGIT_SCALE:.4g})" in readme
        assert "## st-oblique Evaluation" in readme and "| sts | spearman | 0.5000 |" in readme
        assert "python -m evaluation.run --model text_local" in readme


def test_usage_snippets_run_and_load_the_model(round_trip):
    _, _, _, loaded = round_trip
    clip = loaded["snippets"][CLIP_REPO]
    assert clip["model_class"] == "ObliqueSentenceTransformer"
    assert clip["similarities_shape"] == [3, 3]  # 3 example images (from the Hub's assets/) x 3 texts
    assert clip["similarities_max"] <= 4 + 1e-5
    text = loaded["snippets"][TEXT_REPO]
    assert text["model_class"] == "ObliqueSentenceTransformer"
    assert text["similarities_max"] <= 4 + 1e-5
    image_urls = re.findall(r"'(http://127\.0\.0\.1:\d+/user/oblique-clip/resolve/main/assets/image_\d\.jpg)'",
                            loaded["readmes"][CLIP_REPO])
    assert len(image_urls) == 3


def test_incompatible_models_fail_with_clear_messages(round_trip):
    _, _, _, loaded = round_trip
    errors = loaded["errors"]
    newer_config = errors[FUTURE_CONFIG_REPO]
    assert newer_config["type"] == "ObliqueLoadError"
    assert f"{FUTURE_CONFIG_REPO}/1_ObliquePooling/config.json" in newer_config["message"]
    assert "token_mixing" in newer_config["message"]
    assert 'pip install -U "st-oblique>=9.0.0"' in newer_config["message"]
    newer_requirement = errors[FUTURE_REQUIREMENT_REPO]
    assert newer_requirement["type"] == "ImportError"
    assert "st-oblique>=9.0" in newer_requirement["message"] and "pip install -U" in newer_requirement["message"]
    private = errors[TEXT_REPO]
    assert private is not None, "a private repository must not load anonymously"
