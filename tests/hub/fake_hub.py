"""A small in-memory Hugging Face Hub on 127.0.0.1, for offline push/load tests (standard library only).

It implements the HTTP endpoints huggingface_hub 2.x calls for

- ``create_repo``: ``POST /api/repos/create``;
- ``create_branch``: ``POST /api/models/{repo}/branch/{branch}``;
- ``upload_folder`` / ``create_commit`` with regular (base64, non-LFS) files:
  ``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}``, ``POST /api/models/{repo}/commit/{rev}``
  (NDJSON ``header`` / ``file`` / ``deletedFile`` / ``deletedFolder`` lines);
- downloads: ``GET /api/models/{repo}[/revision/{rev}]`` (model info with siblings),
  ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive``), ``POST /api/models/{repo}/paths-info/{rev}``,
  ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``ETag`` (git blob SHA-1), ``X-Repo-Commit`` and
  ``Content-Length`` headers and ``Range`` requests.

Repositories keep their full history: every commit gets a SHA-1 id, branches point at commits, and a revision
can be a branch or a commit id. Errors use the Hub's status codes and ``X-Error-Code`` / ``X-Error-Message``
headers (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), so huggingface_hub raises its usual errors.
Writing needs a token from ``tokens`` with the ``"write"`` role (401 for an unknown token, 403 for a read-only
one); private repositories are invisible (401 ``RepoNotFound``) without a known token.
``fail(method, path_regex, status)`` makes matching requests fail, for error-path tests.

Not covered (requests for them get 501 and are listed in ``unhandled``): LFS and Xet uploads (preupload always
answers ``"regular"``; ``lfsFile`` commit lines are refused), pull requests (``create_pr``), dataset and Space
repositories, repository deletion/moves/settings, refs listing, tag creation, per-organization permissions and
fine-grained token scopes (a write token may write every namespace), rate limits, gated repositories,
pagination of tree listings, ``/api/whoami-v2``.

Example::

    with FakeHub(tokens={"hf_write": "write"}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_write", "HF_HUB_OFFLINE": "0"}
        ...  # run code that pushes/loads with this environment (huggingface_hub reads HF_ENDPOINT at import)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

WRITE_TOKEN, READ_TOKEN = "hf_fake_write_token", "hf_fake_read_token"
"""Conventional tokens for tests: ``FakeHub(tokens={WRITE_TOKEN: "write", READ_TOKEN: "read"})``."""

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
"""The first commit of every new repository, as on the Hub."""


def git_blob_id(content: bytes) -> str:
    """The git blob SHA-1 of ``content``: what the Hub reports as a regular file's ``oid`` and ``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    parent: str | None
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1()
        digest.update(f"{parent}\n{message}\n".encode())
        for path in sorted(files):
            digest.update(f"{path} {git_blob_id(files[path])}\n".encode())
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        commit = Commit(digest.hexdigest(), dict(files), message, parent, now)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class HubError(Exception):
    """An error response: status, message, optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The server and its repositories. Start with ``with FakeHub() as hub`` (or ``start()``/``stop()``).

    Args:
        tokens: ``{token: "write" | "read"}``; requests without one of these tokens are anonymous.

    Attributes:
        url: ``http://127.0.0.1:<port>``, the value for ``HF_ENDPOINT``.
        repos: ``{repo_id: Repo}``.
        requests: ``(method, path, status)`` of every request served.
        unhandled: ``(method, path)`` of requests for endpoints this fake does not implement.
    """

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._failures: list[tuple[str, re.Pattern, int]] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # ---- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def fail(self, method: str, path_regex: str, status: int) -> None:
        """Answer requests matching ``method`` and ``path_regex`` (searched in the path) with ``status``."""
        with self._lock:
            self._failures.append((method.upper(), re.compile(path_regex), status))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (for assertions)."""
        with self._lock:
            commit = self.repos[repo_id].resolve(revision)
            return dict(commit.files) if commit else {}

    # ---- request handling ------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        split = urlsplit(raw_path)
        path, query = split.path, parse_qs(split.query)
        with self._lock:
            for fail_method, pattern, status in self._failures:
                if fail_method == method and pattern.search(path):
                    return _json_response(status, {"error": f"Injected failure ({status})"})
            try:
                return self._route(method, path, query, headers, body)
            except HubError as error:
                extra = {"X-Error-Message": error.message}
                if error.code:
                    extra["X-Error-Code"] = error.code
                return _json_response(error.status, {"error": error.message}, extra)

    def _route(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        role = self._role(headers)
        routes = [
            ("POST", r"^/api/repos/create$", self._create_repo),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>[^/]+)$", self._create_branch),
            ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$", self._preupload),
            ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$", self._commit),
            ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)$", self._paths_info),
            ("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$", self._model_info),
            ("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", self._tree),
            ("GET", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self._resolve),
            ("HEAD", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self._resolve),
        ]
        for route_method, pattern, handler in routes:
            match = re.match(pattern, path)
            if route_method == method and match:
                params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                return handler(role=role, query=query, headers=headers, body=body, method=method, **params)
        self.unhandled.append((method, path))
        return _json_response(501, {"error": f"{method} {path} is not implemented by the fake Hub"})

    def _role(self, headers: dict[str, str]) -> str | None:
        authorization = headers.get("authorization", "")
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _repo(self, repo_id: str, role: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and role is None):
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _require_write(role: str | None) -> None:
        if role is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if role != "write":
            raise HubError(403, "You don't have the rights to write with this token (read-only token)")

    @staticmethod
    def _revision(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---- endpoints --------------------------------------------------------------------------------------

    def _create_repo(self, role, body, **_) -> tuple[int, dict, bytes]:
        self._require_write(role)
        payload = json.loads(body or b"{}")
        if payload.get("type", "model") != "model":
            raise HubError(400, "The fake Hub only hosts model repositories")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo")
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.repos[repo_id] = repo
        return _json_response(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, body, **_) -> tuple[int, dict, bytes]:
        content = json.loads(body or b"{}").get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
        if match is None:
            return _json_response(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            return _json_response(400, {"errors": [{"message": f"Invalid YAML: {error}"}], "warnings": []})
        if not isinstance(metadata, dict):
            return _json_response(400, {"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []})
        return _json_response(200, {"errors": [], "warnings": []})

    def _create_branch(self, role, repo, branch, body, **_) -> tuple[int, dict, bytes]:
        self._require_write(role)
        repository = self._repo(repo, role)
        if branch in repository.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        repository.branches[branch] = self._revision(repository, start).oid
        return _json_response(200, {})

    def _preupload(self, role, repo, rev, body, query, **_) -> tuple[int, dict, bytes]:
        self._require_write(role)
        if "create_pr" in query:
            raise HubError(501, "Pull requests are not implemented by the fake Hub")
        commit = self._revision(self._repo(repo, role), rev)
        files = json.loads(body)["files"]
        answer = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_id(commit.files[item["path"]]) if item["path"] in commit.files else None,
            }
            for item in files
        ]
        return _json_response(200, {"files": answer, "commitOid": commit.oid})

    def _commit(self, role, repo, rev, body, query, **_) -> tuple[int, dict, bytes]:
        self._require_write(role)
        if "create_pr" in query:
            raise HubError(501, "Pull requests are not implemented by the fake Hub")
        repository = self._repo(repo, role)
        branch = unquote(rev)
        if branch not in repository.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to branches)", "RevisionNotFound")
        files = dict(repository.resolve(branch).files)
        message = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent is not None and parent != repository.branches[branch]:
                    raise HubError(412, "A newer commit exists on the branch (parentCommit is outdated)")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported file encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(prefix)}
            else:
                self.unhandled.append(("POST", f"commit line {key!r}"))
                raise HubError(501, f"Commit operation {key!r} (LFS/Xet) is not implemented by the fake Hub")
        commit = repository.commit(branch, files, message)
        return _json_response(
            200, {"commitUrl": f"{self.url}/{repo}/commit/{commit.oid}", "commitOid": commit.oid, "pullRequestUrl": None}
        )

    def _model_info(self, role, repo, rev="main", **_) -> tuple[int, dict, bytes]:
        repository = self._repo(repo, role)
        commit = self._revision(repository, rev)
        info = {
            "id": repo,
            "modelId": repo,
            "sha": commit.oid,
            "private": repository.private,
            "lastModified": commit.date,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        return _json_response(200, info)

    def _tree(self, role, repo, rev, query, path="", **_) -> tuple[int, dict, bytes]:
        commit = self._revision(self._repo(repo, role), rev)
        recursive = query.get("recursive", ["false"])[0].lower() in {"1", "true"}
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict] = {}
        for file_path, content in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                directory = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(directory, {"type": "directory", "oid": _tree_id(directory), "size": 0, "path": directory})
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[file_path] = {"type": "file", "oid": git_blob_id(content), "size": len(content), "path": file_path}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        return _json_response(200, list(entries.values()))

    def _paths_info(self, role, repo, rev, body, headers, **_) -> tuple[int, dict, bytes]:
        commit = self._revision(self._repo(repo, role), rev)
        if "json" in headers.get("content-type", ""):
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        answer = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                content = commit.files[path]
                answer.append({"type": "file", "oid": git_blob_id(content), "size": len(content), "path": path})
            elif any(name.startswith(path + "/") for name in commit.files):
                answer.append({"type": "directory", "oid": _tree_id(path), "size": 0, "path": path})
        return _json_response(200, answer)

    def _resolve(self, role, repo, rev, path, headers, method, **_) -> tuple[int, dict, bytes]:
        commit = self._revision(self._repo(repo, role), rev)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = commit.files[path]
        response_headers = {
            "ETag": f'"{git_blob_id(content)}"',
            "X-Repo-Commit": commit.oid,
            "Content-Type": "application/octet-stream",
        }
        status = 200
        range_match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", ""))
        if range_match:
            start = int(range_match.group(1))
            end = int(range_match.group(2)) if range_match.group(2) else len(content) - 1
            response_headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        return status, response_headers, content


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake_hub: FakeHub

    def _serve(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, response_headers, content = self.fake_hub.handle(self.command, self.path, headers, body)
        self.fake_hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        for key, value in response_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                self.rfile.readline()  # the blank line after the last chunk (no trailers are sent by httpx)
                return body
            body += self.rfile.read(size)
            self.rfile.readline()  # CRLF after each chunk

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in FakeHub.requests


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


def _tree_id(path: str) -> str:
    return hashlib.sha1(f"tree {path}".encode()).hexdigest()


def point_huggingface_hub_at(monkeypatch, url: str, cache_dir: str) -> None:
    """Point huggingface_hub in *this* process at ``url`` for one test (``monkeypatch`` restores it).

    huggingface_hub computes these constants from the environment when it is imported; what a push and a
    download do reads them at call time (``HfApi()`` takes ``ENDPOINT``, file URLs come from the template).
    Code paths that copied them at import (transformers' own offline flag, for one) are not covered: run those
    in a subprocess with ``HF_ENDPOINT`` set instead.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache_dir)
