"""A push that fails (rejected token, server error, no connection) explains itself and changes nothing local."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch
from hub.fake_hub import READ_TOKEN, WRITE_TOKEN, point_huggingface_hub_at
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from tiny_models import SENTENCES

import st_oblique
from st_oblique.errors import HubPushError


def folder_digest(path: Path) -> dict[str, str]:
    return {str(file.relative_to(path)): hashlib.sha256(file.read_bytes()).hexdigest() for file in sorted(path.rglob("*")) if file.is_file()}


def assert_nothing_local_changed(saved_text_model, digest_before) -> None:
    model, path, embeddings = saved_text_model
    assert folder_digest(path) == digest_before
    assert model.model_card_data.model_id is None
    torch.testing.assert_close(model.encode(SENTENCES, convert_to_tensor=True), embeddings, atol=0, rtol=0)


def test_rejected_token(hub, saved_text_model):
    model, path, _ = saved_text_model
    before = folder_digest(path)
    with pytest.raises(HfHubHTTPError, match=r"(?s)401.*rejected the token.*hf auth login.*Nothing local was changed"):
        model.push_to_hub("user/oblique", token="hf_wrong")
    with pytest.raises(HfHubHTTPError, match=r"(?s)rejected the token"):
        st_oblique.push_to_hub(path, "user/oblique", token="hf_wrong")
    assert hub.repos == {}
    assert_nothing_local_changed(saved_text_model, before)


def test_server_error(hub, saved_text_model):
    model, path, _ = saved_text_model
    before = folder_digest(path)
    hub.fail("POST", r"^/api/repos/create$", 500)
    with pytest.raises(HfHubHTTPError, match=r"(?s)500.*server error \(HTTP 500\) while creating the repository.*try again"):
        model.push_to_hub("user/oblique", token=WRITE_TOKEN)
    assert hub.repos == {}
    assert_nothing_local_changed(saved_text_model, before)


def test_connection_refused(monkeypatch, tmp_path, saved_text_model):
    model, path, _ = saved_text_model
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    point_huggingface_hub_at(monkeypatch, closed_url, str(tmp_path / "hub_cache"))
    before = folder_digest(path)
    with pytest.raises(HubPushError, match=rf"(?s)Cannot push user/oblique: the Hub at {closed_url} could not be reached.*HF_ENDPOINT"):
        model.push_to_hub("user/oblique", token=WRITE_TOKEN)
    with pytest.raises(HubPushError, match="could not be reached"):
        st_oblique.push_to_hub(path, "user/oblique", token=WRITE_TOKEN)
    assert_nothing_local_changed(saved_text_model, before)


def test_read_only_token_fails_after_the_repository_exists(hub, saved_text_model):
    _, path, _ = saved_text_model
    HfApi(token=WRITE_TOKEN).create_repo("user/oblique")
    before = folder_digest(path)
    with pytest.raises(HfHubHTTPError, match=r"(?s)403.*may not write to 'user'"):
        st_oblique.push_to_hub(path, "user/oblique", token=READ_TOKEN, exist_ok=True)
    assert set(hub.files("user/oblique")) == {".gitattributes"}, "a failed push must not commit anything"
    assert_nothing_local_changed(saved_text_model, before)


def test_existing_repository_needs_exist_ok(hub, saved_text_model):
    model, _, _ = saved_text_model
    HfApi(token=WRITE_TOKEN).create_repo("user/oblique")
    with pytest.raises(HfHubHTTPError, match=r"(?s)409.*already exists: pass exist_ok=True"):
        model.push_to_hub("user/oblique", token=WRITE_TOKEN)
    assert model.model_card_data.model_id is None
