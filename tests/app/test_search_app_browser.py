"""``st-oblique app`` in a real browser: Playwright drives Chromium (Debian's ``chromium``, no download) against the
app serving a few dozen real Flickr8k-1k photos with a tiny random LiT-style model.

What is checked in the page: the top 5 images shown for a typed query are exactly those the library's own search
(``model.encode`` + ``model.similarity``, no index) returns, with the same scores; the per-token chart has K bars
whose sum is the displayed score; moving the token-count control to k re-ranks exactly as ``truncate_dim=k*d``
predicts; an empty query and an unreadable upload show their errors in the page; an uploaded photo finds itself.
And privacy: every request the browser made went to 127.0.0.1 (recorded through Playwright, anything else
aborted), and the server opened no connection to another host.

Without Playwright, gradio, faiss or a ``chromium`` on PATH the test is skipped with the reason and the install
line; ``ST_OBLIQUE_REQUIRE_BROWSER=1`` (set by .ci/run where chromium exists) makes that a failure.
``ST_OBLIQUE_SCREENSHOT=path.png`` also writes the page's screenshot (a palette PNG) there: the README's is
``evaluation/results/search_app/search_app.png``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from app.search_app_helpers import BROWSER_ARGS, NUM_TOKENS, TOKEN_DIM, chromium_or_skip
from PIL import Image

QUERY = "a dog runs on the beach"
TOP = 5


def library_top(model, images: list, names: list[str], num_tokens: int, query=QUERY) -> tuple[list[str], list[float]]:
    """The library's own search: the best ``TOP`` image names and scores by ``model.similarity`` at
    ``truncate_dim = k*d`` (no index involved)."""
    dim = num_tokens * TOKEN_DIM
    q = model.encode([query], truncate_dim=dim, convert_to_tensor=True)
    corpus = model.encode(images, truncate_dim=dim, convert_to_tensor=True)
    scores, positions = torch.topk(model.similarity(q, corpus)[0], TOP)
    return [names[p] for p in positions.tolist()], scores.tolist()


def bar_values(page) -> list[tuple[int, float, str]]:
    """``(token, cosine, used)`` of every bar of the per-token chart, read from the SVG's accessible labels
    (``"token: 3; cosine: −0.1234567890; tokens: used (first k)"``)."""
    values = []
    for label in page.locator('#token-bars svg [aria-roledescription="bar"]').evaluate_all(
        "bars => bars.map(bar => bar.getAttribute('aria-label'))"
    ):
        fields = dict(part.split(": ", 1) for part in label.split("; "))
        values.append((int(fields["token"]), float(fields["cosine"].replace("\u2212", "-")), fields["tokens"]))
    return sorted(values)


def shown_images(page, num_tokens: int) -> tuple[list[str], list[float]]:
    hits = page.locator(f'#image-hits .hits[data-num-tokens="{num_tokens}"] figure.hit')
    hits.first.wait_for()
    items = hits.evaluate_all("hits => hits.map(hit => [hit.dataset.item, Number(hit.dataset.score)])")
    return [item for item, _ in items], [score for _, score in items]


def is_local(address) -> bool:
    if isinstance(address, tuple) and address:
        try:
            return ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            return address[0] == "localhost"
    return True  # AF_UNIX paths


@pytest.mark.shared
def test_search_page_in_a_browser(tiny_lit_dir, flickr_sample, tmp_path, monkeypatch):
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from st_oblique.app.search_app.corpus import corpus_from_captions
    from st_oblique.app.search_app.engine import open_engine
    from st_oblique.app.search_app.server import BackgroundServer, create_app
    from st_oblique.data.images import load_image
    from st_oblique.evaluation.model_loading import load_model

    photos, table = flickr_sample
    model = load_model(tiny_lit_dir, device="cpu")
    corpus = corpus_from_captions(table, images_root=photos)
    engine = open_engine(model, corpus, tmp_path / "index", name="tiny LiT, random weights", show_progress_bar=False)
    images = [load_image(corpus.image_path(name)) for name in corpus.images]
    expected_full, expected_full_scores = library_top(model, images, corpus.images, NUM_TOKENS)
    expected_one, expected_one_scores = library_top(model, images, corpus.images, 1)
    assert expected_one != expected_full  # the token-count control must visibly change this ranking

    outbound = []  # connections the server process opens to other hosts
    connect = socket.socket.connect

    def recording_connect(sock, address):
        if not is_local(address):
            outbound.append(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    requests: list[str] = []
    with (
        BackgroundServer(create_app(engine, index_note=engine.indexes.describe())) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            context.on("request", lambda request: requests.append(request.url))
            context.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"), lambda route: route.abort())
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(server.url)

            # an empty query: the error in the page
            page.locator("#text-search").click()
            expect(page.locator("#status .error")).to_contain_text("The query is empty")

            # a query: the top 5 are the library's own
            page.locator("#text-query textarea").fill(QUERY)
            page.locator("#text-query textarea").press("Enter")
            names, scores = shown_images(page, NUM_TOKENS)
            assert names[:TOP] == expected_full
            assert scores[:TOP] == pytest.approx(expected_full_scores, abs=1e-5)
            expect(page.locator("#status .error")).to_have_count(0)

            # the per-token chart of the top result: K bars summing to its score
            expect(page.locator('#token-bars svg [aria-roledescription="bar"]')).to_have_count(NUM_TOKENS)
            bars = bar_values(page)
            assert [token for token, _, _ in bars] == list(range(NUM_TOKENS))
            displayed = float(page.locator("#pair .pair").get_attribute("data-score"))
            assert sum(value for _, value, _ in bars) == pytest.approx(displayed, abs=1e-6)
            assert displayed == pytest.approx(scores[0], abs=1e-5)
            figure = page.locator("#token-maps img")
            expect(figure).to_be_visible()

            # the screenshot the README shows (the full ranking, the top result's per-token view)
            shot = tmp_path / "search_app.png"
            page.screenshot(path=str(shot), full_page=True)
            save_readme_screenshot(shot)

            # fewer tokens: the ranking truncate_dim=1*d predicts, and the chart's used bar is the score
            tokens = page.locator("#num-tokens input[type=number]")
            tokens.fill("1")
            tokens.press("Enter")
            names, scores = shown_images(page, 1)
            assert names[:TOP] == expected_one
            assert scores[:TOP] == pytest.approx(expected_one_scores, abs=1e-5)
            expect(page.locator('#pair .pair[data-num-tokens="1"]')).to_have_count(1)
            bars = bar_values(page)
            assert len(bars) == NUM_TOKENS and [used for _, _, used in bars].count("used (first k)") == 1
            assert bars[0][1] == pytest.approx(scores[0], abs=1e-6)

            # another result selected by a click: its own per-token view; "more like this" searches with its photo
            page.locator('#image-hits figure.hit[data-rank="3"]').click()
            expect(page.locator('#pair .pair[data-rank="3"]')).to_have_count(1)
            assert float(page.locator("#pair .pair").get_attribute("data-score")) == pytest.approx(scores[2], abs=1e-6)
            page.locator("#more-like-this").click()
            first = page.locator('#image-hits .hits[data-num-tokens="1"] figure.hit[data-rank="1"]')
            expect(first).to_have_attribute("data-item", names[2])
            assert float(first.get_attribute("data-score")) == pytest.approx(1.0, abs=1e-4)  # itself, 1 token

            # image queries: an unreadable upload is refused in the page, a photo finds itself first
            page.get_by_role("tab", name="Image query").click()
            broken = tmp_path / "broken.jpg"
            broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
            page.locator("#image-upload input[type=file]").set_input_files(str(broken))
            page.locator("#image-search").click()
            expect(page.locator("#status .error")).to_contain_text("cannot be used as an image")
            page.locator("#image-upload button[aria-label='Clear']").click()  # the upload box comes back
            photo = photos / corpus.images[7]
            page.locator("#image-upload input[type=file]").set_input_files(str(photo))
            page.locator("#image-search").click()
            expect(page.locator('#image-hits figure.hit[data-rank="1"]')).to_have_attribute(
                "data-item", corpus.images[7]
            )
            expect(page.locator("#image-preview img")).to_be_visible()
            expect(page.locator("#status .error")).to_have_count(0)
        finally:
            browser.close()

    assert any("/images/" in url for url in requests), requests  # the recording saw the page's traffic
    elsewhere = [
        url
        for url in requests
        if urlparse(url).scheme not in ("data", "blob") and urlparse(url).hostname != "127.0.0.1"
    ]
    assert elsewhere == [], f"the page requested other hosts: {elsewhere}"
    assert outbound == [], f"the server connected to other hosts: {outbound}"
    prefixes = ("/assets/", "/images/", "/gradio_api/file=", "/gradio_api/heartbeat/")
    paths = sorted({next((p + "..." for p in prefixes if urlparse(u).path.startswith(p)), urlparse(u).path) for u in requests})
    print(f"{len(requests)} requests, all to 127.0.0.1: {paths}")  # shown with pytest -s


def save_readme_screenshot(shot: Path) -> None:
    """With ``ST_OBLIQUE_SCREENSHOT=path.png``: the screenshot as a palette PNG there (a few hundred kB)."""
    target = os.environ.get("ST_OBLIQUE_SCREENSHOT")
    if target:
        Image.open(shot).convert("RGB").quantize(colors=128).save(target, format="PNG", optimize=True)
