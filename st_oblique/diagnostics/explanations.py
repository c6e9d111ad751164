"""Per-token explanations of oblique scores: which token matched, and where each image token looks.

The oblique similarity is a sum of K per-token cosines, so every score decomposes exactly into K contributions
(:func:`explain_pair`, from :func:`st_oblique.manifold.per_token_similarity`). When the image tokens come from
attention, each token also has its own attention over the image's patches (:func:`token_attention_maps`): the
last-block attention of each of K class tokens inside a ViT, the last class-attention block of K class tokens that
join after the tower (``token_source="class_attention"``), or the attention pooling over a CNN's feature map of
the LiT dual encoder (``token_source="attention"``), drawn as a grid of K heatmaps over the photo by
:func:`save_attention_figure`.

Example::

    from st_oblique.diagnostics.explanations import explain_pair, save_attention_figure, token_attention_maps

    explanation = explain_pair(model, photo, "a dog runs on the beach")
    explanation.contributions        # (K,) cosines, summing to model.similarity(photo, text)
    maps = token_attention_maps(model, photo)                 # (K, h, w), each map sums to 1
    save_attention_figure(photo, maps, "explain.png", explanation.contributions)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from st_oblique import manifold
from st_oblique.data.images import load_image
from st_oblique.modules.pooling import SINGLE_HEAD, ObliquePooling
from st_oblique.modules.shape import oblique_poolings, oblique_shape
from st_oblique.modules.vit_towers import vit_tower

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

__all__ = [
    "Explanation",
    "attention_figure",
    "attention_grid",
    "attention_image",
    "explain_pair",
    "save_attention_figure",
    "token_attention_maps",
]


@dataclass(frozen=True)
class Explanation:
    """The K contributions of one score.

    Attributes:
        similarity: ``model.similarity(a, b)``, the sum of the K cosines.
        contributions: ``(K,)`` the cosine of each token pair, in token order.
    """

    similarity: float
    contributions: list[float]

    @property
    def ranking(self) -> list[int]:
        """Token indices from the largest contribution to the smallest."""
        return sorted(range(len(self.contributions)), key=lambda k: -self.contributions[k])

    def to_text(self) -> str:
        total = self.similarity
        lines = [f"similarity {total:.4f} = sum of {len(self.contributions)} token cosines"]
        for k in self.ranking:
            value = self.contributions[k]
            bar = "#" * max(0, round(20 * max(value, 0.0)))
            lines.append(f"  token {k:>2}  {value:+.4f}  {bar}")
        return "\n".join(lines)


def explain_pair(model: nn.Module, a: Any, b: Any) -> Explanation:
    """The per-token contributions of ``model.similarity(encode(a), encode(b))`` for two inputs (texts or images).

    Raises:
        ValueError: the model is not oblique.
    """
    shape = oblique_shape(model, required_by="explain_pair")
    first = model.encode([a], convert_to_tensor=True, show_progress_bar=False).cpu()
    second = model.encode([b], convert_to_tensor=True, show_progress_bar=False).cpu()
    contributions = manifold.per_token_similarity(first, second, shape.num_tokens)[0, 0]
    similarity = float(model.similarity(first, second)[0, 0])
    return Explanation(similarity=similarity, contributions=[float(value) for value in contributions])


def token_attention_maps(model: nn.Module, image: Any) -> Tensor | None:
    """Each image token's attention over the image's patches, ``(K, h, w)``, each map summing to 1.

    - Class tokens inside a ViT (``token_source="first"`` on a tower built by st-oblique with K class tokens: HF
      CLIP, timm and open_clip ViTs): the last block's attention of each class token over the patches, averaged
      over its heads and renormalized over the patches (:meth:`~st_oblique.modules.vit_towers.ViTTower.class_token_attention`).
    - Attention pooling (``token_source="attention"``, the LiT dual encoder on a CNN): the weights of its K
      attention queries (averaged over its heads) on the ``h x w`` feature map.
    - Late class tokens (``token_source="class_attention"``): the last class-attention block's attention of each
      class token over the patches (averaged over its heads; the shares of the other class tokens and of a ViT's own
      class and register tokens left out, the rest renormalized).

    None for heads with neither (``"split"``, ``"last"``, class tokens of a tower st-oblique does not run itself).
    """
    pooling, captured = _capture_pooling_inputs(model, image)
    modality = captured.get("modality", "image")
    head = pooling.heads[SINGLE_HEAD] if SINGLE_HEAD in pooling.heads else pooling.heads[str(modality)]
    if head.token_source == "first":
        return _class_token_maps(model, captured.get("pixel_values"), head.num_tokens)
    if head.token_source == "class_attention":
        return _late_class_token_maps(model, head.class_attention, captured)
    if head.token_source != "attention":
        return None
    tokens = captured["token_embeddings"]
    mask = captured.get("attention_mask")
    with torch.inference_mode():
        queries = head.queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        context = head.context_norm(tokens)
        padding = None if mask is None else mask == 0
        _, weights = head.attention(
            queries, context, context, key_padding_mask=padding, need_weights=True, average_attn_weights=True
        )  # (1, K, L)
    height, width = attention_grid(weights.shape[-1], captured.get("pixel_values"))
    return weights[0].float().reshape(-1, height, width).cpu()


def _late_class_token_maps(model: nn.Module, late: nn.Module, captured: dict[str, Any]) -> Tensor:
    """``(K, h, w)`` attention of the K late class tokens (last class-attention block) over the image's patches."""
    tokens, mask = captured["token_embeddings"], captured.get("attention_mask")
    with torch.inference_mode():
        weights = late.attention_maps(tokens, mask)[-1].float().mean(dim=1)[0]  # (K, K + L)
    towers = (vit_tower(module.model) for module in model.modules() if isinstance(getattr(module, "model", None), nn.Module))
    tower = next((found for found in towers if found is not None), None)
    prefix = 0 if tower is None else 1 + tower.tokens_between_class_and_patches  # a ViT's class (+ register) tokens
    rows = weights[:, late.num_tokens + prefix :]
    rows = rows / rows.sum(dim=-1, keepdim=True)
    height, width = attention_grid(rows.shape[-1], captured.get("pixel_values"))
    return rows.reshape(late.num_tokens, height, width).cpu()


def _class_token_maps(model: nn.Module, pixel_values: Tensor | None, num_tokens: int) -> Tensor | None:
    """``(K, h, w)`` last-block attention of the K class tokens of the model's ViT image tower, or None."""
    if pixel_values is None:
        return None
    for module in model.modules():
        backbone = getattr(module, "model", None)
        if not hasattr(module, "extra_class_tokens") or not isinstance(backbone, nn.Module):
            continue
        tower = vit_tower(backbone)
        if tower is None:
            continue
        device = next(tower.module.parameters()).device
        dtype = next(tower.module.parameters()).dtype
        with torch.inference_mode():
            maps = tower.class_token_attention(pixel_values.to(device, dtype), module.extra_class_tokens)[0]
        if maps.shape[0] != num_tokens:
            return None  # the pooling reads fewer or more positions than the tower has class tokens
        height, width = attention_grid(maps.shape[-1], pixel_values)
        return maps.reshape(num_tokens, height, width).cpu()
    return None


def attention_grid(num_patches: int, pixel_values: Tensor | None = None) -> tuple[int, int]:
    """The ``(h, w)`` feature-map shape of ``num_patches`` tokens: the factorization closest to the input's aspect."""
    aspect = 1.0 if pixel_values is None else pixel_values.shape[-2] / pixel_values.shape[-1]
    pairs = [(h, num_patches // h) for h in range(1, num_patches + 1) if num_patches % h == 0]
    return min(pairs, key=lambda pair: abs(math.log(pair[0] / pair[1]) - math.log(aspect)))


def _capture_pooling_inputs(model: nn.Module, image: Any) -> tuple[ObliquePooling, dict[str, Any]]:
    """Run ``model`` on one image and return its ObliquePooling with the features that pooling received."""
    poolings = oblique_poolings(model)
    if not poolings:
        oblique_shape(model, required_by="token_attention_maps")  # raises the usual message
    pooling = poolings[0]
    captured: dict[str, Any] = {}

    def keep(module: nn.Module, args: tuple, output: Any) -> None:
        captured.update(args[0])

    handle = pooling.register_forward_hook(keep)
    try:
        features = model.preprocess([image])
        pixel_values = features.get("pixel_values")
        device = next(model.parameters()).device
        features = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in features.items()}
        with torch.inference_mode():
            model(features)
    finally:
        handle.remove()
    if pixel_values is not None:
        captured.setdefault("pixel_values", pixel_values)
    return pooling, captured


def attention_figure(
    image: Any,
    maps: Tensor,
    contributions: list[float] | None = None,
    title: str | None = None,
    columns: int = 4,
    tokens: Sequence[int] | None = None,
) -> Figure:
    """A matplotlib figure: a grid of the K attention maps (one panel per token), each over the photo, with each
    token's contribution in its title, one colour bar for all panels (the same scale: the share of a token's
    attention on each image position) and, in the figure title, the score they add up to.

    The figure is made with matplotlib's object API (a :class:`matplotlib.figure.Figure` on an Agg canvas), not
    pyplot: the caller's backend and pyplot figures are left alone. Save it with ``figure.savefig(path)``, or show
    it in a notebook with ``IPython.display.display(figure)``.

    Args:
        image: the photo (a PIL image or anything :func:`st_oblique.data.images.load_image` reads).
        maps: ``(K, h, w)`` from :func:`token_attention_maps`.
        contributions: the K cosines of an :class:`Explanation`, shown in the panel titles.
        title: the figure title (e.g. the text the image was compared with).
        columns: panels per row.
        tokens: the token indices to draw, in panel order (default: all K in token order), e.g. the top 4 of
            :attr:`Explanation.ranking`.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib is only needed for the figure
    from matplotlib.figure import Figure

    photo = load_image(image).convert("RGB")
    photo.thumbnail((240, 240))
    num_tokens = maps.shape[0]
    tokens = list(range(num_tokens)) if tokens is None else list(tokens)
    if not tokens or not all(0 <= k < num_tokens for k in tokens):
        raise ValueError(f"tokens must be indices of the {num_tokens} maps, got {tokens}.")
    columns = min(columns, len(tokens))
    rows = math.ceil(len(tokens) / columns)
    panel_width = 2.6  # inches; panels keep the photo's aspect, with room for a 10-pt title above each
    panel_height = panel_width * photo.height / photo.width + 0.35
    figure = Figure(figsize=(panel_width * columns + 1.2, panel_height * rows + 0.9), layout="constrained")
    FigureCanvasAgg(figure)  # renders and saves the figure without pyplot or a backend switch
    axes = figure.subplots(rows, columns)
    axes = np.atleast_1d(axes).reshape(-1)
    extent = (0, photo.width, photo.height, 0)
    top = float(maps[tokens].max()) or 1.0  # one colour scale for every panel, so brightness compares across tokens
    # 8 even colour bands: they survive the 128-colour PNG (a smooth map would come out in uneven bands) and read
    # like contour lines over the photo
    colours = colormaps["inferno"].resampled(8)
    heatmap = None
    for panel, axis in enumerate(axes):
        axis.axis("off")
        if panel >= len(tokens):
            axis.set_visible(False)
            continue
        k = tokens[panel]
        axis.imshow(photo, extent=extent)
        heatmap = axis.imshow(maps[k].numpy(), cmap=colours, alpha=0.55, extent=extent, interpolation="bilinear",
                              vmin=0.0, vmax=top)
        label = f"token {k}"
        if contributions is not None:
            label += f": cos {contributions[k]:+.3f}"
        axis.set_title(label, fontsize=10)
    if heatmap is not None:
        bar = figure.colorbar(heatmap, ax=axes[: len(tokens)].tolist(), shrink=0.6, pad=0.02)
        bar.set_label("share of the token's attention on each position", fontsize=10)
    heading = [title] if title else []
    if contributions is not None:
        heading.append(f"score = sum of the {num_tokens} token cosines = {sum(contributions):+.3f}; "
                       "brighter = where the token attends")
    if heading:
        figure.suptitle("\n".join(heading), fontsize=12)
    return figure


def attention_image(
    image: Any,
    maps: Tensor,
    contributions: list[float] | None = None,
    title: str | None = None,
    columns: int = 4,
    tokens: Sequence[int] | None = None,
) -> Image.Image:
    """:func:`attention_figure` rendered as a PIL palette image (72 dpi, 128 colours)."""
    import io

    from PIL import Image

    figure = attention_figure(image, maps, contributions, title, columns, tokens)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=72, format="png")
    buffer.seek(0)
    # a palette PNG: photos with smooth heatmaps are 3-4x smaller, with no visible change at this size
    return Image.open(buffer).convert("RGB").quantize(colors=128)


def save_attention_figure(
    image: Any,
    maps: Tensor,
    path: str | Path,
    contributions: list[float] | None = None,
    title: str | None = None,
    columns: int = 4,
    tokens: Sequence[int] | None = None,
) -> Path:
    """Write :func:`attention_image` to the PNG ``path`` (about 150 kB for K=16 photos)."""
    path = Path(path)
    attention_image(image, maps, contributions, title, columns, tokens).save(path, format="PNG", optimize=True)
    return path
