"""The fake Hub behaves like the Hub where huggingface_hub can tell: ids, history, revisions, refusals."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hub.fake_hub import WRITE_TOKEN, git_blob_id
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils.sha import git_hash


def test_file_ids_are_git_blob_ids_as_huggingface_hub_computes_them():
    for content in (b"", b"hello", bytes(range(256)) * 10):
        assert git_blob_id(content) == git_hash(content)


def test_history_revisions_and_unchanged_files(hub, tmp_path):
    api = HfApi(token=WRITE_TOKEN)
    api.create_repo("user/repo")
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="a/x.txt", repo_id="user/repo")
    api.upload_file(path_or_fileobj=b"two", path_in_repo="a/x.txt", repo_id="user/repo")
    again = api.upload_file(path_or_fileobj=b"two", path_in_repo="a/x.txt", repo_id="user/repo")
    assert len(hub.repos["user/repo"].commits) == 3  # initial, one, two: the unchanged upload made no commit
    assert again.oid == hub.repos["user/repo"].branches["main"]
    old = hf_hub_download("user/repo", "a/x.txt", revision=first.oid, cache_dir=tmp_path / "cache")
    new = hf_hub_download("user/repo", "a/x.txt", cache_dir=tmp_path / "cache")
    assert open(old, "rb").read() == b"one" and open(new, "rb").read() == b"two"
    tree = {entry.path for entry in api.list_repo_tree("user/repo", recursive=True)}
    assert tree == {".gitattributes", "a", "a/x.txt"}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/repo", "missing.txt", cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/nope")


def test_private_repositories_are_hidden_from_anonymous_requests(hub):
    HfApi(token=WRITE_TOKEN).create_repo("user/secret", private=True)
    assert HfApi(token=WRITE_TOKEN).model_info("user/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("user/secret")


def test_lfs_uploads_and_unknown_endpoints_are_refused_and_recorded(hub):
    HfApi(token=WRITE_TOKEN).create_repo("user/repo")
    lines = [{"key": "header", "value": {"summary": "lfs"}}, {"key": "lfsFile", "value": {"path": "w.bin", "oid": "0" * 64}}]
    # plain HTTP (the standard library), not huggingface_hub's own client, whose package changed between versions
    request = urllib.request.Request(
        f"{hub.url}/api/models/user/repo/commit/main",
        data="\n".join(json.dumps(line) for line in lines).encode(),
        headers={"Authorization": f"Bearer {WRITE_TOKEN}", "Content-Type": "application/x-ndjson"},
        method="POST",
    )
    status, error = status_and_body(request)
    assert status == 501 and "not implemented by the fake Hub" in error
    assert status_and_body(urllib.request.Request(f"{hub.url}/api/whoami-v2"))[0] == 501
    assert ("POST", "commit line 'lfsFile'") in hub.unhandled and ("GET", "/api/whoami-v2") in hub.unhandled
    assert set(hub.files("user/repo")) == {".gitattributes"}


def status_and_body(request: urllib.request.Request) -> tuple[int, str]:
    """The HTTP status of ``request`` and, for an error, the fake Hub's ``error`` text."""
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["error"]
