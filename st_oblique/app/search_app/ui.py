"""The app's page (gradio Blocks): a text or image query, the top-k images and captions with their scores, a
token-count control (the ranking with the first k of the K tokens), and the per-token view of the selected result
(its K cosines as a bar chart, and where the top image tokens look).

Results are plain HTML whose images come from the app's read-only file route
(:mod:`st_oblique.app.search_app.file_route`); every result carries ``data-rank``, ``data-item`` and ``data-score``
(its exact score), so the page can be checked in a browser (tests/app/test_search_app_browser.py). Errors (an empty
query, an unreadable upload, an image query for a text-only model) are shown in the page, in ``#status``.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from st_oblique.app.search_app.engine import Explained, Hit, SearchEngine, SearchResults
from st_oblique.app.search_app.file_route import image_url
from st_oblique.errors import ObliqueInputError

__all__ = ["CSS", "THEME_FONTS", "build_blocks"]

THEME_FONTS = {
    "font": ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    "font_mono": ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
}
"""System fonts only: the page loads no font file (gradio's themes otherwise use web or bundled fonts)."""

CSS = """
.hits.images { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 8px; }
.hits .hit { margin: 0; cursor: pointer; border: 2px solid transparent; border-radius: 6px; padding: 2px; }
.hits .hit.selected { border-color: var(--color-accent); }
.hits.images img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 4px; display: block; }
.hits figcaption { font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.hits.captions { list-style: none; padding: 0; margin: 0; }
.hits.captions .hit { display: flex; gap: 8px; align-items: center; padding: 4px; }
.hits.captions img { width: 48px; height: 48px; object-fit: cover; border-radius: 4px; flex: none; }
.hits.captions .text { flex: 1; }
.hits.captions .source { display: block; }
.hits .score { font-variant-numeric: tabular-nums; font-weight: 600; }
.hits .source { color: var(--body-text-color-subdued); font-size: 12px; }
#status .error { color: var(--error-text-color, #b91c1c); font-weight: 600; }
"""

CLICK_JS = """
element.addEventListener('click', (event) => {
  const hit = event.target.closest('[data-rank]');
  if (hit) trigger('click', {kind: hit.dataset.kind, rank: Number(hit.dataset.rank)});
});
"""
"""Clicking a result asks the server for its per-token view (gr.HTML's ``trigger`` with the result's kind and rank)."""

USED, DROPPED = "used (first k)", "dropped"


def build_blocks(engine: SearchEngine, *, top_k: int = 10, index_note: str = "") -> gr.Blocks:
    """The app's page for ``engine``.

    Args:
        engine: the search engine (model, corpus, indexes).
        top_k: results shown per list at first (the page has a control, 1 to 50).
        index_note: a line about the index (where it is, built or loaded).
    """
    num_tokens = engine.num_tokens
    shared = {"concurrency_limit": 1, "concurrency_id": "model"}  # one model call at a time
    served = frozenset(engine.corpus.images)
    with gr.Blocks(title="st-oblique search", analytics_enabled=False) as blocks:
        note = f"  \n{html.escape(index_note)}" if index_note else ""
        gr.Markdown(f"### st-oblique search\n{html.escape(engine.describe())}{note}")
        state = gr.State({})
        with gr.Row():
            tokens = gr.Slider(
                1,
                num_tokens,
                value=num_tokens,
                step=1,
                label=f"Tokens used: the first k of K={num_tokens}",
                info="The ranking with the first k whole tokens (truncate_dim = k·d, not renormalized).",
                elem_id="num-tokens",
            )
            count = gr.Slider(1, 50, value=top_k, step=1, label="Results per list", elem_id="top-k")
        with gr.Tabs():
            with gr.Tab("Text query", id="text"):
                with gr.Row():
                    text = gr.Textbox(
                        label="Query", placeholder="a dog runs on the beach", lines=1, scale=5, elem_id="text-query"
                    )
                    text_button = gr.Button("Search", variant="primary", scale=1, elem_id="text-search")
            with gr.Tab("Image query", id="image"):
                with gr.Row():
                    upload = gr.File(
                        label="Upload an image", file_types=["image"], type="filepath", scale=3, elem_id="image-upload"
                    )
                    preview = gr.Image(
                        label="Query image", interactive=False, height=160, scale=2, elem_id="image-preview"
                    )
                image_button = gr.Button("Search with this image", variant="primary", elem_id="image-search")
        status = gr.HTML(elem_id="status")
        with gr.Row():
            image_hits = gr.HTML(visible=engine.indexes.images is not None, js_on_load=CLICK_JS, elem_id="image-hits")
            caption_hits = gr.HTML(
                visible=engine.indexes.captions is not None, js_on_load=CLICK_JS, elem_id="caption-hits"
            )
        gr.Markdown("#### What each token contributes to the selected result (click a result)")
        pair = gr.HTML(elem_id="pair")
        with gr.Row():
            bars = gr.BarPlot(
                x="token",
                y="cosine",
                color="tokens",
                sort=[str(k) for k in range(num_tokens)],
                color_map={USED: "#ea580c", DROPPED: "#d4d4d8"},
                y_lim=[-1, 1],
                x_title="token",
                y_title="cosine",
                label="Per-token cosines (the used ones sum to the score)",
                height=300,
                elem_id="token-bars",
                scale=1,
            )
            maps = gr.Image(
                label="Where the top tokens look", interactive=False, height=300, elem_id="token-maps", scale=1
            )
        more = gr.Button("More like this image", visible=False, elem_id="more-like-this")

        search_outputs = [state, status, image_hits, caption_hits, pair, bars, maps, more, preview]

        def run(query: tuple[str, Any], k: int, top: int) -> tuple:
            try:
                value = _resolve(engine, query)
                results = engine.search(value, k, int(top))
                hits = results.images or results.captions
                explained = engine.explain(value, hits[0], k) if hits else None
            except ObliqueInputError as error:  # a bad query, or an indexed photo gone since the index was built
                return ({}, _error(str(error)), "", "", "", None, None, gr.update(visible=False), None)
            session = {"query": query, "results": results, "selected": (hits[0].kind, 1) if hits else None}
            return (
                session,
                "",
                *_hit_lists(results, session["selected"], served),
                *_per_token(engine, explained),
                value if query[0] != "text" else None,
            )

        def run_text(query: str, k: int, top: int) -> tuple:
            return run(("text", query), k, top)

        def run_image(path: str | None, k: int, top: int) -> tuple:
            return run(("upload", path), k, top)

        def rerun(session: dict, k: int, top: int) -> tuple:
            if not session.get("query"):
                return tuple(gr.skip() for _ in search_outputs)
            return run(session["query"], k, top)

        def more_like_this(session: dict, k: int, top: int) -> tuple:
            selected = _selected_hit(session)
            if selected is None or selected.kind != "image":
                return tuple(gr.skip() for _ in search_outputs)
            return run(("indexed", selected.item), k, top)

        def select(session: dict, k: int, event: gr.EventData) -> tuple:
            data = getattr(event, "_data", None) or {}
            if not session.get("results") or data.get("kind") not in ("image", "caption"):
                return tuple(gr.skip() for _ in range(7))
            session = {**session, "selected": (data["kind"], int(data["rank"]))}
            hit = _selected_hit(session)
            if hit is None:
                return tuple(gr.skip() for _ in range(7))
            try:
                explained = engine.explain(_resolve(engine, session["query"]), hit, session["results"].num_tokens)
            except ObliqueInputError as error:
                return (session, gr.skip(), gr.skip(), _error(str(error)), None, None, gr.update(visible=False))
            lists = _hit_lists(session["results"], session["selected"], served)
            return (session, *lists, *_per_token(engine, explained))

        text_button.click(run_text, [text, tokens, count], search_outputs, **shared)
        text.submit(run_text, [text, tokens, count], search_outputs, **shared)
        image_button.click(run_image, [upload, tokens, count], search_outputs, **shared)
        tokens.change(rerun, [state, tokens, count], search_outputs, trigger_mode="always_last", **shared)
        count.change(rerun, [state, tokens, count], search_outputs, trigger_mode="always_last", **shared)
        more.click(more_like_this, [state, tokens, count], search_outputs, **shared)
        select_outputs = [state, image_hits, caption_hits, pair, bars, maps, more]
        image_hits.click(select, [state, tokens], select_outputs, **shared)
        caption_hits.click(select, [state, tokens], select_outputs, **shared)
    return blocks


def _resolve(engine: SearchEngine, query: tuple[str, Any]) -> Any:
    """A session's query (``("text", str)``, ``("upload", path)``, ``("indexed", relative path)``) as a text or a PIL
    image, checked."""
    kind, value = query
    if kind == "text":
        return engine.text_query(value)
    if kind == "indexed":
        return engine.image_query(engine.corpus.image_path(value))
    return engine.image_query(value)


def _selected_hit(session: dict) -> Hit | None:
    results: SearchResults | None = session.get("results")
    if results is None or session.get("selected") is None:
        return None
    kind, rank = session["selected"]
    hits = results.images if kind == "image" else results.captions
    return hits[rank - 1] if 1 <= rank <= len(hits) else None


def _error(message: str) -> str:
    return f'<p class="error" role="alert">{html.escape(message)}</p>'


def _hit_lists(results: SearchResults, selected: tuple[str, int] | None, served: frozenset[str]) -> tuple[str, str]:
    """The HTML of the image results and of the caption results (a caption shows its image when it is one of the
    ``served`` images)."""

    def chosen(hit: Hit) -> str:
        return " selected" if selected == (hit.kind, hit.rank) else ""

    def attributes(hit: Hit) -> str:
        return (
            f'class="hit{chosen(hit)}" data-kind="{hit.kind}" data-rank="{hit.rank}" '
            f'data-item="{html.escape(hit.item)}" data-score="{hit.score!r}"'
        )

    images = "".join(
        f'<figure {attributes(hit)} title="{html.escape(hit.item)}">'
        f'<img src="{html.escape(image_url(hit.item))}" alt="{html.escape(hit.item)}" loading="lazy">'
        f'<figcaption><span class="rank">#{hit.rank}</span> <span class="score">{hit.score:.4f}</span> '
        f"{html.escape(hit.item)}</figcaption></figure>"
        for hit in results.images
    )
    captions = "".join(
        f"<li {attributes(hit)}>"
        + (f'<img src="{html.escape(image_url(hit.image))}" alt="" loading="lazy">' if hit.image in served else "")
        + f'<span class="rank">#{hit.rank}</span> <span class="score">{hit.score:.4f}</span> '
        f'<span class="text">{html.escape(hit.item)}'
        + (f'<span class="source">{html.escape(hit.image)}</span>' if hit.image else "")
        + "</span></li>"
        for hit in results.captions
    )
    header = f'data-num-tokens="{results.num_tokens}"'
    with_k = f"first {results.num_tokens} tokens"
    return (
        f'<h4>Images ({with_k})</h4><div class="hits images" {header}>{images}</div>' if results.images else "",
        f'<h4>Captions ({with_k})</h4><ol class="hits captions" {header}>{captions}</ol>' if results.captions else "",
    )


def _per_token(engine: SearchEngine, explained: Explained | None) -> tuple[str, Any, Any, Any]:
    """The per-token view of a result: its description (HTML), the bar chart's data, the attention image, and the
    "more like this" button."""
    if explained is None:
        return "", None, None, gr.update(visible=False)
    hit, k, contributions = explained.hit, explained.num_tokens, explained.contributions
    frame = pd.DataFrame(
        {
            "token": [str(token) for token in range(len(contributions))],
            "cosine": contributions,
            "tokens": [USED if token < k else DROPPED for token in range(len(contributions))],
        }
    )
    subject = f"image {hit.item}" if hit.kind == "image" else f"caption “{hit.item}”"
    described = (
        f'<p class="pair" data-kind="{hit.kind}" data-rank="{hit.rank}" data-score="{explained.score!r}" '
        f'data-num-tokens="{k}"><b>#{hit.rank}</b> {html.escape(subject)}: score '
        f"<b>{explained.score:.4f}</b> = the sum of the cosines of the first {k} of the {len(contributions)} tokens"
        + (f" (all {len(contributions)}: {sum(contributions):.4f})" if k < len(contributions) else "")
        + "."
        + (f"<br><small>{html.escape(explained.note)}</small>" if explained.note else "")
        + "</p>"
    )
    return described, frame, explained.figure, gr.update(visible=hit.kind == "image" and engine.has_image_tower)
