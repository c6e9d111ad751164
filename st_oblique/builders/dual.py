"""The builder of the ``dual`` family: an oblique image-text model from separate text and image towers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_oblique.builders.assembly import oblique_model
from st_oblique.builders.hf_loading import hf_loading, load_transformer
from st_oblique.builders.late_tokens import late_class_tokens
from st_oblique.model.loading_options import LoadingOptions, with_loading_options
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.image_class_token_transformer import ImageClassTokenTransformer
from st_oblique.modules.modality_router import ModalityRouter
from st_oblique.modules.pooling import TokenSource

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["oblique_dual_encoder"]


@with_loading_options
def oblique_dual_encoder(
    text_model: str,
    image_model: str,
    *,
    num_tokens: int = 16,
    token_dim: int = 32,
    text_token_source: TokenSource = "first",
    image_token_source: TokenSource | None = None,
    per_token_projection: bool = True,
    layer_norm: bool = True,
    max_seq_length: int | None = None,
    text_model_kwargs: dict[str, Any] | None = None,
    image_model_kwargs: dict[str, Any] | None = None,
    text_processor_kwargs: dict[str, Any] | None = None,
    image_processor_kwargs: dict[str, Any] | None = None,
    text_config_kwargs: dict[str, Any] | None = None,
    image_config_kwargs: dict[str, Any] | None = None,
    revision: str | dict[str, str] | None = None,
    class_attention_layers: int = 2,
    class_attention_width: int | dict[str, int] | None = None,
    class_attention_heads: int | None = None,
    class_attention_mlp_ratio: float | None = None,
    **loading: Unpack[LoadingOptions],
) -> ObliqueSentenceTransformer:
    """An oblique image-text model from separate text and image towers (LiT-style), e.g. MiniLM + EfficientNet.

    - Text: :class:`~st_oblique.modules.ClassTokenTransformer` (K class tokens prepended, for bidirectional encoders
      such as BERT/MiniLM), as in :func:`oblique_text_model`.
    - Image: :class:`~st_oblique.modules.ImageClassTokenTransformer` on a Hugging Face image model (a timm model
      through ``TimmWrapperModel``, a ``CLIPVisionModel``, any image ``AutoModel``). ViTs with a class token get K
      class tokens (``"first"``); other backbones (CNNs) give their flattened feature map and the K tokens come from
      K learned attention queries (``"attention"``). ``image_token_source=None`` picks this automatically.
    - Routing: a :class:`~st_oblique.modules.ModalityRouter` sends each batch to its tower by modality, so training
      needs no ``router_mapping``: a dataset with an ``Image()`` column and a caption column trains as is. A batch
      mixing images and texts is rejected (encode each modality separately).

    Both towers keep their pretrained weights; the two heads of :class:`~st_oblique.ObliquePooling` are new: train
    the model (e.g. with :class:`~st_oblique.ObliqueContrastiveLoss`) before use. To train only the heads and the
    text tower (LiT), lock the image tower with ``st_oblique.modules.tower_lock.lock_tower(model, "image")``: frozen,
    kept in eval mode, and recorded in the saved model (``st-oblique train --lock-image-tower`` does this).

    Loading options: the shared ones (``cache_folder``, ``token``, ``local_files_only``, ``trust_remote_code``)
    apply to both towers. ``model_kwargs``, ``processor_kwargs`` and ``config_kwargs`` apply to both towers too,
    and ``text_*_kwargs`` / ``image_*_kwargs`` add to or override them key by key for one tower, e.g.
    ``config_kwargs={"output_hidden_states": False}, image_config_kwargs={"drop_rate": 0.1}``.

    Args:
        text_model: Hub id or local path of a Hugging Face text encoder or a Sentence Transformers model.
        image_model: Hub id or local path of a Hugging Face image model (e.g. ``"timm/efficientnet_b0.ra_in1k"``).
        num_tokens: K (default 16, as in the paper).
        token_dim: d (default 32, as in the paper).
        text_token_source: ``"first"`` (K class tokens), ``"attention"``, ``"split"`` or ``"class_attention"``
            (K class tokens that join after the unchanged tower, see :func:`oblique_text_model`) for the text head.
        image_token_source: ``"first"`` (ViTs only), ``"attention"``, ``"split"`` or ``"class_attention"``; None:
            ``"first"`` for ViTs with a class token, else ``"attention"``.
        per_token_projection: a projection per token (default) or one shared projection.
        layer_norm: a LayerNorm in the heads before the projection.
        max_seq_length: text truncation length (the K−1 class tokens come on top).
        text_model_kwargs, image_model_kwargs: ``model_kwargs`` of one tower (override the shared ones).
        text_processor_kwargs, image_processor_kwargs: ``processor_kwargs`` of one tower (the tokenizer, the image
            processor).
        text_config_kwargs, image_config_kwargs: ``config_kwargs`` of one tower.
        revision: branch, tag or commit id for both towers, or ``{"text": ..., "image": ...}`` (a commit id
            belongs to one repository).
        model_kwargs: passed to both towers' ``from_pretrained`` (e.g. ``{"dtype": torch.bfloat16}``).
        processor_kwargs: passed to both towers' ``AutoProcessor.from_pretrained``.
        config_kwargs: passed to both towers' ``AutoConfig.from_pretrained`` (config overrides).
        class_attention_layers, class_attention_width, class_attention_heads, class_attention_mlp_ratio: the
            class-attention blocks of the ``"class_attention"`` heads, as in :func:`oblique_text_model` (a CNN's
            blocks are random).
        <loading options>

    Returns:
        An :class:`~st_oblique.ObliqueSentenceTransformer` (``similarity_fn_name="dot"``) encoding texts and images
        into ``(N, K*d)`` embeddings. Its card data names both towers as base models.

    Example::

        import st_oblique

        model = st_oblique.oblique_dual_encoder(
            "sentence-transformers/all-MiniLM-L6-v2", "timm/tf_efficientnet_lite0.in1k", num_tokens=16, token_dim=32
        )
        # train with SentenceTransformerTrainer on a dataset with an Image() column and a caption column, then:
        image_embeddings = model.encode(["photo.jpg"])  # (1, 512)
        text_embeddings = model.encode(["a photo of a dog"])  # (1, 512)
        scores = model.similarity(image_embeddings, text_embeddings)  # (1, 1), in [-16, 16]
    """
    if text_token_source == "last":
        raise ValueError(
            "text_token_source='last' is for causal text towers; use 'first', 'attention', 'split' or 'class_attention'."
        )
    revisions = _tower_revisions(revision)
    tower_kwargs = {
        "text": (text_model_kwargs, text_processor_kwargs, text_config_kwargs),
        "image": (image_model_kwargs, image_processor_kwargs, image_config_kwargs),
    }
    text_loading, image_loading = (
        hf_loading({**loading, "revision": revisions[tower]}, *tower_kwargs[tower]) for tower in ("text", "image")
    )
    text = load_transformer(
        ClassTokenTransformer,
        text_model,
        num_class_tokens=num_tokens if text_token_source == "first" else 1,
        max_seq_length=max_seq_length,
        loading=text_loading,
    )
    image = load_transformer(ImageClassTokenTransformer, image_model, num_class_tokens=None, loading=image_loading)
    if image_token_source is None:
        image_token_source = image.image_token_source
    if image_token_source == "first":
        image.set_num_class_tokens(num_tokens)
    widths = {"text": text.get_embedding_dimension(), "image": image.get_embedding_dimension()}
    towers = {"text": (text.model, "text", text.tokenizer), "image": (image.model, "image", None)}
    sources = {"text": text_token_source, "image": image_token_source}
    late = late_class_tokens(
        {name: tower for name, tower in towers.items() if sources[name] == "class_attention"},
        widths,
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    pooling = late.pooling(
        widths,
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=sources,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
    )
    router = ModalityRouter(text=[text], image=[image])
    return oblique_model(router, pooling, device=loading["device"], base_model=[text_model, image_model])


def _tower_revisions(revision: str | dict[str, str] | None) -> dict[str, str | None]:
    """``{"text": ..., "image": ...}`` from one revision for both towers or a dict with one per tower."""
    if not isinstance(revision, dict):
        return {"text": revision, "image": revision}
    unknown = sorted(set(revision) - {"text", "image"})
    if unknown:
        raise ValueError(
            f"revision has unknown tower(s) {unknown}; use one revision for both towers or "
            "{'text': ..., 'image': ...}."
        )
    return {"text": revision.get("text"), "image": revision.get("image")}
