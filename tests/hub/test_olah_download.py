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

import json
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


BUILD_BOTH = """
import shutil, sys, torch
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from cli.test_hub_layout import hub_layout
from tiny_models import tiny_bert
import st_oblique
bert, repos = tiny_bert(sys.argv[1]), Path(sys.argv[2])
transformer = Transformer(bert)
SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension()), Normalize()]).save(
    str(repos / "saved-plain"))
torch.manual_seed(0)
st_oblique.oblique_text_model(bert, num_tokens=4, token_dim=8).save(str(repos / "saved-oblique"))
for name in ("plain", "oblique"):
    hub_layout(repos / f"saved-{name}", repos / name)
    shutil.rmtree(repos / f"saved-{name}")
"""

COMMANDS = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import mteb
from huggingface_hub import snapshot_download
from tiny_models import SENTENCES, tiny_data_root
import st_oblique
from st_oblique.app.cli import main
from st_oblique.evaluation import register_mteb_model
from st_oblique.evaluation.mteb_tasks import LocalSTSBenchmark
work, local_oblique = Path(sys.argv[2]), sys.argv[3]
data_root = tiny_data_root((work / "data").mkdir() or work / "data")
mteb_options = ["--mteb-task", "LocalSTSBenchmark", "--data-root", str(data_root), "--no-progress"]
codes = {
    "eval org/plain": main(["eval", "--model", "org/plain", *mteb_options, "--output-dir", str(work / "e1")]),
    "eval org/oblique": main(["eval", "--model", "org/oblique", *mteb_options, "--output-dir", str(work / "e2")]),
    "info org/oblique": main(["info", "org/oblique", "--data", "builtin"]),
    "explain org/oblique": main(["explain", "org/oblique", "--text", "a dog", "--text", "a cat"]),
}
# `train --model org/plain` builds with the model's Transformer through the Hub: the builder it runs, at the commit
# the mirror serves (olah, offline, answers a request for a missing optional file at a branch name, such as
# transformers' probe for adapter_config.json at "main", with 401 where the Hub answers 404; at a commit it answers 404)
commit = Path(snapshot_download("org/plain", allow_patterns=["modules.json"])).name
built = st_oblique.oblique_text_model("org/plain", revision=commit, num_tokens=4, token_dim=8)
codes["oblique_text_model(org/plain)"] = int(built.encode(SENTENCES[:2]).shape != (2, 32))
meta = register_mteb_model("org/oblique", revision="main")
tasks = [LocalSTSBenchmark(data_root=data_root)]
def score(model):
    result = mteb.evaluate(model, tasks, cache=None, show_progress_bar=False, co2_tracker=False, raise_error=True)
    return float(result.task_results[0].get_score())
print("RESULT", json.dumps({"codes": codes, "name": meta.name, "embed_dim": meta.embed_dim,
                            "hub_score": score(mteb.get_model(meta.name)),
                            "local_score": score(register_mteb_model(local_oblique, name="local/oblique"))}))
"""


def test_every_command_on_hub_ids_through_olah(olah_server, tmp_path):
    """Hub ids served by olah, laid out as git keeps them (no folder for a file-less Normalize, no empty folders):
    a plain Sentence Transformers model and an oblique one, through ``st-oblique eval``, ``info``, ``explain``, the
    builder of ``train --model`` and ``register_mteb_model`` (whose mteb scores equal those of the same folder on
    disk)."""
    url, mirrors = olah_server
    repos = mirrors / "models" / "org"
    subprocess.run(
        [sys.executable, "-c", BUILD_BOTH, str(tmp_path / "bert"), str(repos), str(TESTS)],
        env=clean_env(HF_HUB_OFFLINE="0"), check=True, capture_output=True, timeout=300,
    )
    assert not (repos / "plain" / "2_Normalize").exists()
    for name in ("plain", "oblique"):
        (repos / name / "additional_chat_templates").mkdir()
        (repos / name / "additional_chat_templates" / ".gitkeep").touch()
        git("init", "-q", "-b", "main", cwd=repos / name)
        git("add", "-A", cwd=repos / name)
        git("commit", "-q", "-m", "the pushed model folder", cwd=repos / name)
    work = tmp_path / "work"
    work.mkdir()
    ran = subprocess.run(
        [sys.executable, "-c", COMMANDS, str(TESTS), str(work), str(repos / "oblique")],
        env=clean_env(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="0"),
        capture_output=True, text=True, timeout=600, cwd=work,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout.split("RESULT ", 1)[1])
    assert result["codes"] == dict.fromkeys(result["codes"], 0), ran.stderr[-3000:]
    assert result["name"] == "org/oblique" and result["embed_dim"] == [32, 16, 8]
    assert result["hub_score"] == result["local_score"]
    log = (tmp_path / "olah.log").read_text()
    assert "/org/plain/resolve/" in log and "/org/oblique/resolve/" in log  # the files came from olah
