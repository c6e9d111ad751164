"""The download half of the Hub round trip against a real Hub server: olah (PyPI) serving a local git repository as
the Hub repository ``org/name`` on 127.0.0.1, offline. ``st_oblique.load("org/name", revision="main")`` and
``SentenceTransformer("org/name", revision="main", trust_remote_code=True)`` load it through ``HF_ENDPOINT`` in a
fresh process and give the saved model's embeddings exactly.

Uploads stay tested against the project's in-process fake Hub (tests/hub/fake_hub.py): no installable server accepts
pushes offline (olah is a read-only mirror).

Two things the model folder needs here, found with olah 0.5:
- the model is built with ``HF_HUB_OFFLINE=0``: built offline, transformers writes ``"local_files_only": true`` into
  the saved ``tokenizer_config.json``, and a Hub download of that tokenizer then never fetches ``tokenizer.json``;
- an ``additional_chat_templates/`` folder (a ``.gitkeep``): transformers lists that folder of every Hub repository,
  and olah answers a listing of a missing folder of a mirrored repository with 401, which transformers treats as a
  failure of the whole tokenizer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.olah

BUILD = """
import sys, torch
sys.path.insert(0, sys.argv[3])
from tiny_models import tiny_bert
import st_oblique
torch.manual_seed(0)
st_oblique.oblique_text_model(tiny_bert(sys.argv[1]), num_tokens=4, token_dim=8).save(sys.argv[2])
"""

LOAD = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
import st_oblique
texts = ["a man plays the guitar", "two dogs run in the park"]
expected = st_oblique.load(sys.argv[1]).encode(texts)
through_load = st_oblique.load("org/name", revision="main").encode(texts)
through_st = SentenceTransformer("org/name", revision="main", trust_remote_code=True).encode(texts)
np.testing.assert_array_equal(through_load, expected)
np.testing.assert_array_equal(through_st, expected)
print("IDENTICAL", expected.shape)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_", "HUGGING"))}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.email=tests@st-oblique", "-c", "user.name=tests", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def olah_server(tmp_path):
    """olah on a free 127.0.0.1 port, offline, mirroring ``tmp_path/mirrors``; yields (url, mirrors folder)."""
    olah_cli = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
    if not Path(olah_cli).exists():
        pytest.skip("olah is not installed (pip install olah; part of st-oblique[dev])")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    port = free_port()
    mirrors = tmp_path / "mirrors"
    (mirrors / "models" / "org").mkdir(parents=True)
    config = tmp_path / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\nrepos-path = "{tmp_path / "olah_repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n\n[accessibility]\noffline = true\n'
    )
    log = open(tmp_path / "olah.log", "w")
    server = subprocess.Popen([olah_cli, "-c", str(config)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"olah could not start: {(tmp_path / 'olah.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"olah did not listen on 127.0.0.1 within 60 s: {(tmp_path / 'olah.log').read_text()[-500:]}")
                time.sleep(0.3)
        yield url, mirrors
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_load_from_olah_through_hf_endpoint(olah_server, tmp_path):
    url, mirrors = olah_server
    repo = mirrors / "models" / "org" / "name"
    subprocess.run(
        [sys.executable, "-c", BUILD, str(tmp_path / "bert"), str(repo), str(TESTS)],
        env=clean_env(HF_HUB_OFFLINE="0"),
        check=True,
        capture_output=True,
        timeout=300,
    )
    (repo / "additional_chat_templates").mkdir()
    (repo / "additional_chat_templates" / ".gitkeep").touch()
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "the pushed model folder", cwd=repo)

    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, str(repo)],
        env=clean_env(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "IDENTICAL (2, 32)" in loaded.stdout
    assert "/org/name/resolve/" in (tmp_path / "olah.log").read_text()  # the files came from olah
