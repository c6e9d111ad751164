"""``st-oblique app`` without a browser: the corpus readers, the index cache (rebuilt when the model or a file
changes, reused otherwise), the rankings against ``model.similarity`` at ``truncate_dim``, the per-token
explanations, the in-page errors, and the read-only image route (nothing outside the folder, nothing but the
indexed images)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("faiss", reason="the app extra is not installed: pip install 'st-oblique[app]'")
pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'st-oblique[app]'")

from app.search_app_helpers import NUM_TOKENS, TOKEN_DIM
from fastapi import FastAPI
from fastapi.testclient import TestClient

from st_oblique.app.cli import main
from st_oblique.app.search_app.corpus import corpus_from_captions, corpus_from_folder
from st_oblique.app.search_app.engine import QueryError, open_engine
from st_oblique.app.search_app.file_route import image_router, image_url
from st_oblique.app.search_app.index_cache import MANIFEST, load_or_build_indexes
from st_oblique.data.images import load_image
from st_oblique.errors import ObliqueConfigError
from st_oblique.evaluation.model_loading import load_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lit(tiny_lit_dir):
    return load_model(tiny_lit_dir, device="cpu")


def reference_ranking(model, query, items, num_tokens: int) -> tuple[list[int], np.ndarray]:
    """Positions of ``items`` by ``model.similarity`` with ``query`` at ``truncate_dim = k*d`` (best first), and the
    scores."""
    dim = num_tokens * TOKEN_DIM
    q = model.encode([query], truncate_dim=dim, convert_to_tensor=True)
    corpus = model.encode(items, truncate_dim=dim, convert_to_tensor=True)
    scores = model.similarity(q, corpus)[0].double().numpy()
    return sorted(range(len(items)), key=lambda i: -scores[i]), scores


# --- the corpus ------------------------------------------------------------------------------------------------------


def test_folder_corpus_lists_images_at_any_depth_and_nothing_else(photo_folder, tmp_path):
    (photo_folder / "notes.txt").write_text("not an image")
    (photo_folder / ".hidden.jpg").write_bytes((photo_folder / "p0.jpg").read_bytes())
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((photo_folder / "p0.jpg").read_bytes())
    (photo_folder / "link.jpg").symlink_to(outside)
    corpus = corpus_from_folder(photo_folder)
    assert corpus.images == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p4.jpg", "sub/p5.png"]
    assert corpus.images_root == photo_folder.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObliqueConfigError, match="no image files"):
        corpus_from_folder(tmp_path / "empty")
    archive = tmp_path / "photos.tar"
    archive.write_bytes(b"")
    with pytest.raises(ObliqueConfigError, match="extract"):
        corpus_from_folder(archive)


def test_caption_corpus_with_and_without_images(photo_folder, tmp_path):
    table = tmp_path / "captions.tsv"
    table.write_text("image\tcaption_idx\tcaption\np1.jpg\t1\ta dog runs\np1.jpg\t0\ta dog\np5.png\t0\ta cat sits\n")
    corpus = corpus_from_captions(table, images_root=photo_folder)
    assert corpus.images == ["p1.jpg", "sub/p5.png"]
    assert [(c.text, c.image) for c in corpus.captions] == [
        ("a dog", "p1.jpg"),
        ("a dog runs", "p1.jpg"),
        ("a cat sits", "sub/p5.png"),
    ]
    text_only = corpus_from_captions(table)
    assert text_only.images == [] and text_only.images_root is None
    assert [c.text for c in text_only.captions] == ["a dog runs", "a dog", "a cat sits"]
    sentences = tmp_path / "sentences.csv"
    sentences.write_text('id,text\n1,"a man plays, the guitar"\n2,\n3,two dogs run\n')
    assert [c.text for c in corpus_from_captions(sentences).captions] == ["a man plays, the guitar", "two dogs run"]
    with pytest.raises(ObliqueConfigError, match="has the columns"):
        corpus_from_captions(sentences, caption_column="sentence")


# --- the index cache -------------------------------------------------------------------------------------------------


def test_index_is_built_once_and_reused(lit, photo_folder, tmp_path):
    corpus = corpus_from_folder(photo_folder)
    first = load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False)
    assert set(first.built) == {"images"} and first.captions is None
    manifest = json.loads((tmp_path / "index" / MANIFEST).read_text())
    assert [entry[0] for entry in manifest["images"]["signature"]["files"]] == corpus.images
    assert manifest["model"]["num_tokens"] == NUM_TOKENS and manifest["model"]["fingerprint"].startswith("w-")
    index_file = tmp_path / "index" / "images.faiss"
    written = index_file.stat().st_mtime_ns
    time.sleep(0.01)
    second = load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False)
    assert second.built == {} and "loaded" in second.describe()
    assert index_file.stat().st_mtime_ns == written  # not rewritten
    np.testing.assert_array_equal(second.images.vectors(), first.images.vectors())


def test_index_is_rebuilt_when_an_image_changes(lit, photo_folder, tmp_path):
    load_or_build_indexes(lit, corpus_from_folder(photo_folder), tmp_path / "index", show_progress_bar=False)
    before = load_or_build_indexes(lit, corpus_from_folder(photo_folder), tmp_path / "index", show_progress_bar=False)
    target = photo_folder / "p2.jpg"
    target.write_bytes((photo_folder / "p3.jpg").read_bytes())
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load_or_build_indexes(lit, corpus_from_folder(photo_folder), tmp_path / "index", show_progress_bar=False)
    assert set(after.built) == {"images"}
    changed = after.images.vectors()
    np.testing.assert_allclose(changed[2], changed[3], atol=1e-6)  # p2 now holds p3's pixels
    assert not np.allclose(changed[2], before.images.vectors()[2], atol=1e-3)
    (photo_folder / "p9.jpg").write_bytes(target.read_bytes())  # a new file
    assert (
        len(
            load_or_build_indexes(
                lit, corpus_from_folder(photo_folder), tmp_path / "index", show_progress_bar=False
            ).images
        )
        == 7
    )


def test_index_is_rebuilt_for_another_model_and_per_part(lit, photo_folder, tmp_path):
    table = tmp_path / "captions.tsv"
    table.write_text("image\tcaption\np1.jpg\ta dog runs\np3.jpg\ta cat sits\n")
    corpus = corpus_from_captions(table, images_root=photo_folder)
    assert set(load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False).built) == {
        "images",
        "captions",
    }
    table.write_text("image\tcaption\np1.jpg\ta dog runs fast\np3.jpg\ta cat sits\n")
    corpus = corpus_from_captions(table, images_root=photo_folder)
    assert set(load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False).built) == {"captions"}
    with torch.no_grad():  # same architecture, one weight changed: another model
        next(p for p in lit.parameters() if p.requires_grad).add_(0.01)
    try:
        rebuilt = load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False)
    finally:
        with torch.no_grad():
            next(p for p in lit.parameters() if p.requires_grad).sub_(0.01)
    assert set(rebuilt.built) == {"images", "captions"}


def test_index_folder_that_is_not_an_index_is_refused(lit, photo_folder, tmp_path):
    folder = tmp_path / "my-documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(ObliqueConfigError, match="not a search index"):
        load_or_build_indexes(lit, corpus_from_folder(photo_folder), folder, show_progress_bar=False)
    assert (folder / "thesis.tex").read_text() == "precious" and len(list(folder.iterdir())) == 1


def test_unreadable_images_are_left_out_and_reported(lit, photo_folder, tmp_path):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    corpus = corpus_from_folder(photo_folder)
    indexes = load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False)
    assert len(indexes.images) == len(corpus.images) - 1
    assert [name for name, _ in indexes.skipped] == ["broken.jpg"]
    assert corpus.images[indexes.images.positions[0]] == "p0.jpg" and "broken.jpg" not in [
        corpus.images[p] for p in indexes.images.positions
    ]
    again = load_or_build_indexes(lit, corpus, tmp_path / "index", show_progress_bar=False)
    assert again.built == {} and again.images.positions == indexes.images.positions and "unreadable" in again.describe()


# --- searches and explanations --------------------------------------------------------------------------------------


def test_rankings_equal_model_similarity_at_every_token_count(lit, photo_folder, tmp_path):
    table = tmp_path / "captions.tsv"
    table.write_text(
        "image\tcaption\np0.jpg\ta dog runs on the beach\np1.jpg\ttwo people ride bikes\n"
        "p2.jpg\ta red car in the street\np4.jpg\ta child eats food\n"
    )
    corpus = corpus_from_captions(table, images_root=photo_folder)
    engine = open_engine(lit, corpus, tmp_path / "index", name="tiny", show_progress_bar=False)
    images = [load_image(corpus.image_path(name)) for name in corpus.images]
    captions = [caption.text for caption in corpus.captions]
    query = engine.text_query("  a dog plays in the park ")
    assert query == "a dog plays in the park"
    for k in range(1, NUM_TOKENS + 1):
        results = engine.search(query, k, top_k=10)
        for hits, items in ((results.images, images), (results.captions, captions)):
            order, scores = reference_ranking(lit, query, items, k)
            assert [hit.position for hit in hits] == order
            np.testing.assert_allclose([hit.score for hit in hits], scores[order], atol=1e-5)
            assert [hit.rank for hit in hits] == list(range(1, len(items) + 1))
        explained = engine.explain(query, results.images[0], k)
        assert len(explained.contributions) == NUM_TOKENS
        assert explained.score == pytest.approx(results.images[0].score, abs=1e-5)
        assert explained.figure is not None and explained.figure.width > 100  # attention pooling: one map per token
    picture = engine.image_query(str(corpus.image_path("p4.jpg")))
    results = engine.search(picture, NUM_TOKENS, top_k=3)
    assert results.images[0].item == "p4.jpg" and results.images[0].score == pytest.approx(NUM_TOKENS, abs=1e-4)
    caption_explained = engine.explain(picture, results.captions[0], 2)
    assert caption_explained.score == pytest.approx(sum(caption_explained.contributions[:2]))
    assert caption_explained.figure is not None  # the query image's attention


def test_queries_the_app_refuses_in_the_page(lit, tiny_text_dir, photo_folder, tmp_path):
    engine = open_engine(
        lit, corpus_from_folder(photo_folder), tmp_path / "index", name="tiny", show_progress_bar=False
    )
    for empty in ("", "   ", None):
        with pytest.raises(QueryError, match="empty"):
            engine.text_query(empty)
    broken = tmp_path / "upload.jpg"
    broken.write_bytes(b"GIF89a truncated")
    with pytest.raises(QueryError, match="cannot be used as an image"):
        engine.image_query(str(broken))
    with pytest.raises(QueryError, match="No image"):
        engine.image_query(None)
    with pytest.raises(QueryError, match="token count must be 1 to 4"):
        engine.search("a dog", 0, 5)

    text_model = load_model(tiny_text_dir, device="cpu")
    with pytest.raises(ObliqueConfigError, match="no image tower"):
        open_engine(
            text_model, corpus_from_folder(photo_folder), tmp_path / "index2", name="text", show_progress_bar=False
        )
    table = tmp_path / "sentences.tsv"
    table.write_text("text\na man plays the guitar\ntwo dogs run in the park\na child eats food\n")
    text_engine = open_engine(
        text_model, corpus_from_captions(table), tmp_path / "index3", name="text", show_progress_bar=False
    )
    with pytest.raises(QueryError, match="no image tower"):
        text_engine.image_query(str(photo_folder / "p0.jpg"))
    results = text_engine.search("dogs in the park", NUM_TOKENS, 2)
    assert results.images == [] and results.captions[0].item == "two dogs run in the park"
    explained = text_engine.explain("dogs in the park", results.captions[0], NUM_TOKENS)
    assert explained.figure is None and "neither side" in explained.note


# --- the image route -------------------------------------------------------------------------------------------------


def test_the_file_route_serves_the_indexed_images_and_nothing_else(photo_folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (photo_folder / "notes.txt").write_text("not an image")
    (photo_folder / ".hidden.jpg").write_bytes((photo_folder / "p0.jpg").read_bytes())
    (photo_folder / "escape.jpg").symlink_to(secret)
    corpus = corpus_from_folder(photo_folder)
    app = FastAPI()
    app.include_router(image_router(corpus))
    client = TestClient(app)
    ok = client.get("/" + image_url("sub/p5.png"))
    assert ok.status_code == 200 and ok.content == (photo_folder / "sub" / "p5.png").read_bytes()
    assert ok.headers["x-content-type-options"] == "nosniff" and ok.headers["content-type"] == "image/png"
    refused = [
        "/images/../secret.txt",
        "/images/%2e%2e/secret.txt",
        "/images/..%2fsecret.txt",
        "/images/sub/../../secret.txt",
        "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/images//etc/passwd",
        "/images/" + str(secret),
        "/images/%2F" + str(secret).lstrip("/").replace("/", "%2F"),
        "/images/notes.txt",
        "/images/.hidden.jpg",
        "/images/escape.jpg",
        "/images/missing.jpg",
        "/images/",
        "/images/sub",
    ]
    for path in refused:
        response = client.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert b"private" not in response.content
    assert client.post("/" + image_url("p0.jpg")).status_code == 405
    assert client.put("/" + image_url("p0.jpg"), content=b"x").status_code == 405
    assert client.delete("/" + image_url("p0.jpg")).status_code == 405
    assert (photo_folder / "p0.jpg").stat().st_size > 100  # still there


def test_served_app_refuses_raw_traversal_requests(lit, photo_folder, tmp_path):
    """Through the real server (uvicorn), with request lines sent byte for byte (no client-side normalization)."""
    import http.client

    from st_oblique.app.search_app.server import BackgroundServer, create_app

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    engine = open_engine(
        lit, corpus_from_folder(photo_folder), tmp_path / "index", name="tiny", show_progress_bar=False
    )
    with BackgroundServer(create_app(engine)) as server:
        host, port = server.url.split("//")[1].rstrip("/").split(":")
        for raw in (
            "/images/../secret.txt",
            "/images/../../" + str(secret).lstrip("/"),
            "/images/%2e%2e/secret.txt",
            "/images/..%5csecret.txt",
            "/../secret.txt",
            "/images/p0.jpg/../../secret.txt",
        ):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.putrequest("GET", raw, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            body = response.read()
            connection.close()
            assert b"private" not in body, raw
            assert response.status in (400, 404), (raw, response.status)
        page = urllib.request.urlopen(server.url, timeout=30).read().decode()
        assert "st-oblique search" in page
        assert (
            urllib.request.urlopen(server.url + image_url("p1.jpg"), timeout=10).read()
            == (photo_folder / "p1.jpg").read_bytes()
        )
        # gradio's own file route serves its cache and uploads only: not the image folder, the index or other files
        for path in (secret, photo_folder / "p0.jpg", tmp_path / "index" / "manifest.json", Path("/etc/passwd")):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=10)
            assert refused.value.code in (403, 404)
        for hidden in ("docs", "redoc", "gradio_api/docs"):  # Swagger/ReDoc pages load their scripts from a CDN
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(server.url + hidden, timeout=10)


def test_browser_check_skips_or_fails_with_the_install_line(monkeypatch):
    import shutil

    from app.search_app_helpers import INSTALL_LINE, REQUIRE_BROWSER, chromium_or_skip

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no `chromium` on PATH") as skipped:
        chromium_or_skip()
    assert INSTALL_LINE in str(skipped.value)
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match="ST_OBLIQUE_REQUIRE_BROWSER=1"):
        chromium_or_skip()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/chromium" if name == "chromium" else None)
    assert chromium_or_skip() == "/usr/bin/chromium"  # Playwright, gradio and faiss are installed here


# --- the command -----------------------------------------------------------------------------------------------------


def test_command_builds_the_index_and_reuses_it(tiny_lit_dir, photo_folder, tmp_path, capsys):
    index = tmp_path / "index"
    arguments = [
        "app",
        tiny_lit_dir,
        "--images",
        str(photo_folder),
        "--index",
        str(index),
        "--index-only",
        "--no-progress",
    ]
    assert main(arguments) == 0
    assert "images built in" in capsys.readouterr().out
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "images loaded" in out and "K=4 tokens of d=8" in out


def test_command_errors(tiny_lit_dir, tiny_text_dir, photo_folder, tmp_path, capsys):
    cases = [
        (["--images-root", str(photo_folder), "--images", str(photo_folder)], "--images-root goes with --captions"),
        (["--images", str(tmp_path / "nowhere")], "no such folder"),
        (["--images", str(photo_folder), "--port", "70000"], "--port 70000"),
    ]
    for extra, message in cases:
        assert main(["app", tiny_lit_dir, *extra, "--index-only", "--index", str(tmp_path / "i")]) == 2
        assert message in capsys.readouterr().err
    assert (
        main(["app", tiny_text_dir, "--images", str(photo_folder), "--index-only", "--index", str(tmp_path / "i")]) == 2
    )
    assert "has no image tower" in capsys.readouterr().err
    assert main(["app", tiny_lit_dir]) == 2
    assert "one of the arguments --images --captions is required" in capsys.readouterr().err


@pytest.mark.slow
def test_command_serves_on_localhost_until_stopped(tiny_lit_dir, photo_folder, tmp_path):
    """``st-oblique app`` in its own process: it listens on 127.0.0.1, serves the page and the images, and stops
    cleanly on SIGTERM."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "st_oblique",
            "app",
            tiny_lit_dir,
            "--images",
            str(photo_folder),
            "--port",
            "0",
            "--index",
            str(tmp_path / "index"),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    lines = []
    try:
        deadline = time.monotonic() + 240
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if match := re.search(r"Search page: (http://127\.0\.0\.1:\d+/)", line):
                url = match.group(1)
        assert url, "".join(lines)
        assert "st-oblique search" in urllib.request.urlopen(url, timeout=30).read().decode()
        assert (
            urllib.request.urlopen(url + image_url("p0.jpg"), timeout=10).read()
            == (photo_folder / "p0.jpg").read_bytes()
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(lines) + output
    assert "Stopped." in output
