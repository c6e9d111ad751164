"""The builder of the ``clip`` family: an oblique image-text model from a Hugging Face CLIP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_oblique.builders.assembly import init_heads_from_projections, oblique_model
from st_oblique.builders.hf_loading import hf_loading, load_transformer
from st_oblique.builders.late_tokens import check_late_source, late_class_tokens
from st_oblique.model.loading_options import LoadingOptions, with_loading_options
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.clip_class_token_transformer import CLIPClassTokenTransformer

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["oblique_clip"]


@with_loading_options
def oblique_clip(
    model_name_or_path: str,
    *,
    num_tokens: int = 16,
    token_dim: int = 32,
    init_from_clip_projections: bool = True,
    per_token_projection: bool = True,
    layer_norm: bool = False,
    max_seq_length: int | None = None,
    token_source: str | None = None,
    class_attention_layers: int = 2,
    class_attention_width: int | dict[str, int] | None = None,
    class_attention_heads: int | None = None,
    class_attention_mlp_ratio: float | None = None,
    **loading: Unpack[LoadingOptions],
) -> ObliqueSentenceTransformer:
    """An oblique image-text model from a Hugging Face CLIP model, with K class tokens inside both towers.

    The vision tower gets K−1 extra learned class tokens next to its own; the causal text tower gets K class
    positions after each caption (its EOS and K−1 copies), see
    :class:`~st_oblique.modules.CLIPClassTokenTransformer`. :class:`~st_oblique.ObliquePooling` has one head per
    tower (text: the last K positions, image: the first K tokens) projecting each class token to a unit vector of
    size d.

    The heads start from CLIP's own projections (``init_from_clip_projections``): token k uses columns
    ``[k*d, (k+1)*d)`` of the projection (modulo its width), so with ``num_tokens=1`` and ``token_dim`` equal to
    CLIP's projection size the model reproduces CLIP's normalised embeddings exactly, and with K*d equal to it
    (e.g. 16 x 32 for 512) the oblique embedding starts as CLIP's embedding cut into K normalised pieces. The
    towers end in CLIP's LayerNorms, so the heads have none of their own by default (``layer_norm=False``).

    With ``token_source="class_attention"`` both towers are left unchanged and the K class tokens join after them
    (CaiT's late class tokens, see :func:`~st_oblique.builders.text.oblique_text_model`): captions and images are
    encoded at about CLIP's own speed; the class tokens may attend to every caption position up to EOS (padding is
    never attended). At the towers' widths the blocks start from their last layers and final LayerNorms and the heads
    from CLIP's projections; at the default width 128 they are random.

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face CLIP model (``"openai/clip-vit-base-patch32"``),
            or of a Sentence Transformers folder holding one.
        num_tokens: K (default 16, as in the paper).
        token_dim: d (default 32, as in the paper).
        init_from_clip_projections: start the heads from CLIP's projections (else random).
        per_token_projection: a projection per token (default) or one shared projection.
        layer_norm: a LayerNorm in the heads before the projection.
        max_seq_length: caption truncation length (the K−1 class positions come on top, within CLIP's 77).
        token_source: None (K class tokens inside both towers) or ``"class_attention"`` (late class tokens).
        class_attention_layers, class_attention_width, class_attention_heads, class_attention_mlp_ratio: the
            class-attention blocks, as in :func:`~st_oblique.builders.text.oblique_text_model`.
        <loading options>

    Returns:
        An :class:`~st_oblique.ObliqueSentenceTransformer` (``similarity_fn_name="dot"``) that encodes texts and
        images (PIL images, paths, URLs, ``{"image": ...}`` dicts) into ``(N, K*d)`` embeddings.

    Example::

        import st_oblique

        model = st_oblique.oblique_clip("openai/clip-vit-base-patch32", num_tokens=16, token_dim=32)
        image_embeddings = model.encode(["cat.jpg", "dog.jpg"])          # (2, 512)
        text_embeddings = model.encode(["a photo of a cat", "a photo of a dog"])
        scores = model.similarity(image_embeddings, text_embeddings)    # (2, 2): sums of 16 cosines
    """
    late_tokens = check_late_source("oblique_clip", token_source)
    clip = load_transformer(
        CLIPClassTokenTransformer,
        model_name_or_path,
        num_class_tokens=1 if late_tokens else num_tokens,
        max_seq_length=max_seq_length,
        loading=hf_loading(loading),
    )
    late = late_class_tokens(
        {modality: (clip.model, modality, None) for modality in ("text", "image")} if late_tokens else {},
        clip.embedding_dimensions,
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    sources = dict.fromkeys(("text", "image"), "class_attention") if late_tokens else {"text": "last", "image": "first"}
    pooling = late.pooling(
        clip.embedding_dimensions,
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=sources,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
    )
    if init_from_clip_projections:
        init_heads_from_projections(
            pooling,
            {"text": clip.model.text_projection.weight.T, "image": clip.model.visual_projection.weight.T},
        )
    return oblique_model(clip, pooling, device=loading["device"], base_model=model_name_or_path)
