"""One-line builders that turn pretrained backbones into oblique SentenceTransformer models.

Every builder takes its backbone argument(s) positionally and everything else by keyword, with the loading options
of Sentence Transformers under the same names (:data:`~st_oblique.model.loading_options.LOADING_OPTIONS`,
declared once by :func:`~st_oblique.model.loading_options.with_loading_options`); an option a backbone cannot honour raises
a ``ValueError`` that says what to do instead.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers.base.modules import Module
from sentence_transformers.util import load_file_path
from torch import Tensor, nn

from st_oblique.citations import SPARO_CITATION
from st_oblique.model.loading_options import LoadingOptions, with_loading_options
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.clip_class_token_transformer import CLIPClassTokenTransformer
from st_oblique.modules.image_class_token_transformer import ImageClassTokenTransformer
from st_oblique.modules.late_class_tokens import class_attention_options, initialize_class_attention
from st_oblique.modules.modality_router import ModalityRouter
from st_oblique.modules.open_clip_encoder import OpenCLIPEncoder
from st_oblique.modules.pooling import SINGLE_HEAD, ObliquePooling, TokenSource
from st_oblique.modules.tower_layers import tower_layers

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

logger = logging.getLogger(__name__)


@with_loading_options
def oblique_text_model(
    model_name_or_path: str,
    *,
    num_tokens: int = 16,
    token_dim: int = 32,
    token_source: TokenSource = "first",
    per_token_projection: bool = True,
    layer_norm: bool = True,
    max_seq_length: int | None = None,
    class_attention_layers: int = 2,
    class_attention_width: int | None = None,
    class_attention_heads: int | None = None,
    class_attention_mlp_ratio: float | None = None,
    **loading: Unpack[LoadingOptions],
) -> ObliqueSentenceTransformer:
    """An oblique text embedding model from a bidirectional Hugging Face text encoder.

    With ``token_source="first"`` (default, the paper's design) the encoder gets K class tokens
    (:class:`~st_oblique.modules.ClassTokenTransformer` prepends K−1 copies of ``[CLS]``) and
    :class:`~st_oblique.ObliquePooling` turns each into a unit vector of size d. With ``"attention"`` or
    ``"split"`` the encoder is left unchanged and the K tokens come from the pooling head. With
    ``"class_attention"`` the encoder is left unchanged too and K class tokens join after it (CaiT's late class
    tokens, :class:`~st_oblique.modules.class_attention.ClassAttention`): texts are no longer than for the plain
    model, so encoding runs at about its speed.

    The pooling head is new (randomly initialised): train the model (``ObliqueContrastiveLoss``) before use.

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face encoder, or of a Sentence Transformers model
            (its Transformer is used; its pooling and Normalize modules are replaced).
        num_tokens: K (default 16, as in the paper).
        token_dim: d (default 32, as in the paper; embeddings have K*d floats).
        token_source: ``"first"``, ``"attention"`` or ``"split"`` (see :class:`ObliquePooling`).
        per_token_projection: separate projection per token (default) or one shared projection.
        layer_norm: LayerNorm before the projection.
        max_seq_length: text truncation length (class tokens come on top); default: the model's.
        class_attention_layers: class-attention blocks of ``token_source="class_attention"`` (default 2, as CaiT).
        class_attention_width: their width (two-tower builders: one for both or ``{"text": ..., "image": ...}``).
            Default (None): 128, capped at the encoder's width; the blocks, the projection down to it and the class
            tokens are random (fast: about the plain model's encoding speed). The encoder's own width (e.g. 384 for
            MiniLM): the blocks start as copies of the encoder's last layers and the class tokens as its ``[CLS]``
            embeddings at positions 0..K-1 (costs more per class token).
        class_attention_heads: attention heads; None: the encoder's at its width, else 4 (heads of 32) or fewer.
        class_attention_mlp_ratio: MLP width over width; None: the encoder's at its width, else 4.
        <loading options>

    Returns:
        An :class:`~st_oblique.ObliqueSentenceTransformer` with ``similarity_fn_name="dot"``; embeddings have
        shape ``(N, K*d)``.

    Example::

        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        embeddings = model.encode(["A man is playing a guitar.", "A woman is slicing an onion."])  # (2, 512)
        scores = model.similarity(embeddings, embeddings)  # (2, 2): sums of 16 cosines, in [-16, 16]
    """
    if token_source == "last":
        raise ValueError(
            "token_source='last' is for causal text towers with class positions after EOS (st_oblique.oblique_clip); "
            "a bidirectional text encoder uses 'first' (class tokens prepended), 'attention', 'split' or "
            "'class_attention' (class tokens after the encoder)."
        )
    backbone = _load_transformer(
        ClassTokenTransformer,
        model_name_or_path,
        num_class_tokens=num_tokens if token_source == "first" else 1,
        max_seq_length=max_seq_length,
        loading=_hf_loading(loading),
    )
    late = _class_attention_head(
        {SINGLE_HEAD: (backbone.model, "text", backbone.tokenizer)} if token_source == "class_attention" else {},
        {SINGLE_HEAD: backbone.get_embedding_dimension()},
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    pooling = ObliquePooling(
        backbone.get_embedding_dimension(),
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=token_source,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
        **late.options,
    )
    late.initialize(pooling)
    return _oblique_model(backbone, pooling, device=loading["device"], base_model=model_name_or_path)


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
    (CaiT's late class tokens, see :func:`oblique_text_model`): captions and images are encoded at about CLIP's own
    speed; the class tokens may attend to every caption position up to EOS (padding is never attended). At the
    towers' widths the blocks start from their last layers and final LayerNorms and the heads from CLIP's
    projections; at the default width 128 they are random.

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
            class-attention blocks, as in :func:`oblique_text_model`.
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
    late_tokens = _check_late_source("oblique_clip", token_source)
    clip = _load_transformer(
        CLIPClassTokenTransformer,
        model_name_or_path,
        num_class_tokens=1 if late_tokens else num_tokens,
        max_seq_length=max_seq_length,
        loading=_hf_loading(loading),
    )
    late = _class_attention_head(
        {modality: (clip.model, modality, None) for modality in ("text", "image")} if late_tokens else {},
        clip.embedding_dimensions,
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    pooling = ObliquePooling(
        clip.embedding_dimensions,
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=dict.fromkeys(("text", "image"), "class_attention") if late_tokens else {"text": "last", "image": "first"},
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
        **late.options,
    )
    late.initialize(pooling)
    if init_from_clip_projections:
        init_heads_from_projections(
            pooling,
            {"text": clip.model.text_projection.weight.T, "image": clip.model.visual_projection.weight.T},
        )
    return _oblique_model(clip, pooling, device=loading["device"], base_model=model_name_or_path)


@with_loading_options
def oblique_open_clip(
    model_name: str,
    pretrained: str | None = None,
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
    """An oblique image-text model from any open_clip model, with K class tokens inside both towers.

    :class:`~st_oblique.modules.OpenCLIPEncoder` wraps ``open_clip.create_model(model_name, pretrained=...)``
    (open_clip's transforms and tokenizer, K class tokens in a ViT and after the EOT of the causal text tower);
    :class:`~st_oblique.ObliquePooling` has one head per tower. Image towers without a class token (ResNet, timm
    CNNs) are pooled by K attention queries over their feature map. The heads start from open_clip's
    projections as in :func:`oblique_clip`. With ``token_source="class_attention"`` both towers are left unchanged
    and K class tokens join after them, as in :func:`oblique_clip` (for CNN image towers the blocks are random).

    The loading options are those of the other builders, as far as ``open_clip.create_model`` supports them; the
    others raise a ``ValueError`` saying what to do instead:

    - ``revision``: not supported (open_clip downloads the default branch). Download the revision yourself
      (``huggingface_hub.snapshot_download(repo_id, revision=...)``) and pass the folder as ``model_name``.
    - ``token``: not supported as an argument; log in (``hf auth login``) or set ``HF_TOKEN``, which open_clip's
      downloads use.
    - ``local_files_only=True``: honoured when nothing is downloaded (a local folder, a ``local-dir:`` name, a
      built-in architecture with random weights or a local checkpoint file); for ``hf-hub:`` names and pretrained
      tags set ``HF_HUB_OFFLINE=1`` before starting Python instead.
    - ``trust_remote_code=True``: does not apply (open_clip runs no code from model repositories).

    Args:
        model_name: an open_clip model name: ``"ViT-B-32"``, ``"hf-hub:org/repo"``, ``"local-dir:/path"``, a
            name registered with ``open_clip.add_model_config``, or a local folder in open_clip's layout
            (``open_clip_config.json`` + weights, e.g. a saved oblique open_clip model).
        pretrained: a pretrained tag (``"laion2b_s34b_b79k"``) or a local checkpoint file; None: random weights.
        num_tokens: K (default 16, as in the paper).
        token_dim: d (default 32, as in the paper).
        init_from_clip_projections: start the heads from open_clip's projections (else random).
        per_token_projection: a projection per token (default) or one shared projection.
        layer_norm: a LayerNorm in the heads before the projection (the towers end in open_clip's own).
        max_seq_length: caption truncation length (the K−1 class positions come on top, within the context).
        token_source: None (K class tokens inside both towers) or ``"class_attention"`` (late class tokens).
        class_attention_layers, class_attention_width, class_attention_heads, class_attention_mlp_ratio: the
            class-attention blocks, as in :func:`oblique_text_model`.
        cache_folder: open_clip's download cache (its ``cache_dir``).
        revision: not supported (see above); must be None.
        token: not supported (see above); must be None.
        local_files_only: refuse to download (see above).
        trust_remote_code: must be False (see above).
        model_kwargs: ``open_clip.create_model`` loading arguments (``{"precision": "bf16"}``, ``pretrained_image``,
            ``weights_only``, ...; see :data:`~st_oblique.modules.open_clip_encoder.LOADING_ARGS`).
        processor_kwargs: image preprocessing overrides (``size``, ``mean``, ``std``, ``interpolation``,
            ``resize_mode``, ``fill_color``), saved with the model.
        config_kwargs: model config overrides (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...), as
            ``open_clip.create_model(**config_kwargs)`` applies them; saved with the model.
        <loading options>

    Returns:
        An :class:`~st_oblique.ObliqueSentenceTransformer` (``similarity_fn_name="dot"``) encoding texts and images
        into ``(N, K*d)`` embeddings.

    Raises:
        ValueError: an option open_clip cannot honour (see above).

    Example::

        import st_oblique

        model = st_oblique.oblique_open_clip("ViT-B-32", "laion2b_s34b_b79k", num_tokens=16, token_dim=32)
        embeddings = model.encode(["a diagram", "a dog", "a cat"])  # (3, 512)
        model.save("oblique-vit-b-32")  # open_clip.create_model("local-dir:oblique-vit-b-32") loads the backbone
    """
    _check_open_clip_options(model_name, pretrained, loading)
    late_tokens = _check_late_source("oblique_open_clip", token_source)
    encoder = OpenCLIPEncoder(
        model_name,
        pretrained=pretrained,
        num_class_tokens=1 if late_tokens else num_tokens,
        model_kwargs=loading["model_kwargs"],
        config_kwargs=loading["config_kwargs"],
        processor_kwargs=loading["processor_kwargs"],
        cache_folder=loading["cache_folder"],
    )
    if max_seq_length is not None:
        encoder.max_seq_length = max_seq_length
    late = _class_attention_head(
        {modality: (encoder.model, modality, None) for modality in ("text", "image")} if late_tokens else {},
        encoder.embedding_dimensions,
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    sources = {"text": "last", "image": encoder.image_token_source}
    pooling = ObliquePooling(
        encoder.embedding_dimensions,
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=dict.fromkeys(sources, "class_attention") if late_tokens else sources,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
        **late.options,
    )
    late.initialize(pooling)
    if init_from_clip_projections:
        projections = {}
        text_projection = encoder.text_tower.text_projection
        if text_projection is not None:
            projections["text"] = text_projection.weight.T if isinstance(text_projection, nn.Linear) else text_projection
        if encoder.image_token_source == "first" and getattr(encoder.model.visual, "proj", None) is not None:
            # a ViT's projection reads its class token (K early or late class tokens)
            projections["image"] = encoder.model.visual.proj
        init_heads_from_projections(pooling, projections)
    base_model = model_name if pretrained is None else f"{model_name} ({pretrained})"
    return _oblique_model(encoder, pooling, device=loading["device"], base_model=base_model)


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
        raise ValueError("text_token_source='last' is for causal text towers; use 'first', 'attention', 'split' or "
            "'class_attention'.")
    revisions = _tower_revisions(revision)
    tower_kwargs = {
        "text": (text_model_kwargs, text_processor_kwargs, text_config_kwargs),
        "image": (image_model_kwargs, image_processor_kwargs, image_config_kwargs),
    }
    text_loading, image_loading = (
        _hf_loading({**loading, "revision": revisions[tower]}, *tower_kwargs[tower]) for tower in ("text", "image")
    )
    text = _load_transformer(
        ClassTokenTransformer,
        text_model,
        num_class_tokens=num_tokens if text_token_source == "first" else 1,
        max_seq_length=max_seq_length,
        loading=text_loading,
    )
    image = _load_transformer(ImageClassTokenTransformer, image_model, num_class_tokens=None, loading=image_loading)
    if image_token_source is None:
        image_token_source = image.image_token_source
    if image_token_source == "first":
        image.set_num_class_tokens(num_tokens)
    widths = {"text": text.get_embedding_dimension(), "image": image.get_embedding_dimension()}
    towers = {"text": (text.model, "text", text.tokenizer), "image": (image.model, "image", None)}
    sources = {"text": text_token_source, "image": image_token_source}
    late = _class_attention_head(
        {name: tower for name, tower in towers.items() if sources[name] == "class_attention"},
        widths,
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    pooling = ObliquePooling(
        widths,
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=sources,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
        **late.options,
    )
    late.initialize(pooling)
    router = ModalityRouter(text=[text], image=[image])
    return _oblique_model(router, pooling, device=loading["device"], base_model=[text_model, image_model])


@dataclass(frozen=True)
class _LateClassTokens:
    """The ``class_attention_*`` options of ObliquePooling for a backbone's towers, and their initialisation."""

    towers: dict[str, Any]
    options: dict[str, Any]

    def initialize(self, pooling: ObliquePooling) -> None:
        if self.towers:
            initialize_class_attention(pooling, self.towers)


def _class_attention_head(
    sources: dict[str, tuple[nn.Module, str, Any]],
    widths: dict[str, int],
    *,
    layers: int,
    width: int | dict[str, int] | None,
    heads: int | None,
    mlp_ratio: float | None,
) -> _LateClassTokens:
    """``sources``: ``{head name: (tower model, modality, tokenizer or None)}`` of the class-attention heads."""
    if not sources:
        return _LateClassTokens({}, {})
    towers = {
        name: tower_layers(model, modality, first_token_id=getattr(tokenizer, "cls_token_id", None))
        for name, (model, modality, tokenizer) in sources.items()
    }
    options = class_attention_options(
        towers, widths, layers=layers, width=width, heads=heads, mlp_ratio=mlp_ratio
    )
    return _LateClassTokens(towers, options)


@dataclass(frozen=True)
class GeometryPreset:
    """A named set of st-oblique options that reproduces another method's geometry with st-oblique's pieces.

    The options fall in two groups: the head of the model (:class:`~st_oblique.ObliquePooling`: where the K tokens
    come from, attention heads per token, projections, LayerNorm), set by :meth:`apply` on a built model, and the
    loss (how the K cosines are reduced and the temperature), given by :attr:`loss_options` to any st-oblique loss.

    Attributes:
        name: the method's name.
        citation: its BibTeX entry.
        token_source: ObliquePooling's ``token_source`` for every tower.
        num_attention_heads: attention heads per token of an ``"attention"`` head.
        per_token_projection: one projection per token.
        layer_norm: a LayerNorm in the head before the projection.
        reduction: ``"sum"`` or ``"mean"`` of the K cosines in the loss.
        scale: the loss's (initial) logit scale.
        learnable_scale: learn the scale (log space, like CLIP).
        max_scale: the cap of a learned scale.
    """

    name: str
    citation: str
    token_source: TokenSource
    num_attention_heads: int | None
    per_token_projection: bool
    layer_norm: bool
    reduction: str
    scale: float
    learnable_scale: bool
    max_scale: float | None

    @property
    def loss_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~st_oblique.ObliqueContrastiveLoss` (and the other st-oblique losses)."""
        return {
            "scale": self.scale,
            "learnable_scale": self.learnable_scale,
            "max_scale": self.max_scale,
            "reduction": self.reduction,
        }

    def apply(self, model: ObliqueSentenceTransformer) -> ObliqueSentenceTransformer:
        """``model`` (from any builder) with a new, untrained head of this preset; the towers are kept as they are.

        Raises:
            ValueError: ``model`` is not input module + ObliquePooling, or its towers prepend or append class tokens
                while the preset reads the tokens by attention (build the model with ``token_source="attention"``,
                ``text_token_source="attention", image_token_source="attention"`` for a dual encoder).
        """
        modules = list(model.children())
        if len(modules) != 2 or not isinstance(modules[1], ObliquePooling):
            raise ValueError(
                f"GeometryPreset {self.name!r} replaces the ObliquePooling of a model built by st-oblique's builders "
                f"(input module + ObliquePooling); this model has {[type(module).__name__ for module in modules]}."
            )
        backbone, pooling = modules
        sources = {name: head.token_source for name, head in pooling.heads.items()}
        if self.token_source == "attention" and set(sources.values()) != {"attention"}:
            raise ValueError(
                f"{self.name} reads K slots by attention over the towers' tokens, but this model's heads read {sources} "
                "(its towers carry K class tokens). Build it with token_source='attention' (oblique_text_model) or "
                "text_token_source='attention', image_token_source='attention' (oblique_dual_encoder)."
            )
        in_features = pooling.in_features
        head = ObliquePooling(
            in_features,
            num_tokens=pooling.num_tokens,
            token_dim=pooling.token_dim,
            token_source=pooling.token_source if self.token_source is None else self.token_source,
            per_token_projection=self.per_token_projection,
            layer_norm=self.layer_norm,
            num_attention_heads=self.num_attention_heads,
        )
        rebuilt = ObliqueSentenceTransformer(
            modules=[backbone, head], device=str(model.device), similarity_fn_name=model.similarity_fn_name
        )
        rebuilt.model_card_data.base_model = model.model_card_data.base_model
        return rebuilt


SPARO = GeometryPreset(
    name="Sparo",
    citation=SPARO_CITATION,
    token_source="attention",
    num_attention_heads=1,
    per_token_projection=True,
    layer_norm=False,
    reduction="mean",
    scale=1 / 0.07,
    learnable_scale=True,
    max_scale=100.0,
)
"""Sparo's read-out (Vani et al., ECCV 2024, arXiv 2404.15721; code github.com/ankitkv/sparo-clip) with st-oblique's
pieces: K slots, each read by one **single-head** attention query over a tower's token states and projected to d,
each L2-normalized; the loss compares them by the **mean** of the K cosines (Sparo's slots are scaled by 1/√K, so
its dot product is that mean) with CLIP's **learnable temperature** (init 1/0.07, cap 100).

It is the oblique geometry of Sun (arXiv 2209.02127) with another read-out and another scale: the same K unit
tokens and the same ranking (the mean is the sum divided by K), so a Sparo model saved by st-oblique scores with
``"dot"`` (the sum; Sparo's score is ``model.similarity(...) / K``) and is served, evaluated and shared like any
oblique model. Sun's model instead gets its K tokens from K class tokens inside the towers and trains on the raw
sum with a small (capped) temperature. What this preset does not reproduce: Sparo's own parameterization of the
slots (here the slots share one key/value projection and differ by their query and output projection) and any
training recipe beyond the loss.

Example::

    import st_oblique
    from st_oblique.builders import SPARO

    model = SPARO.apply(st_oblique.oblique_dual_encoder(
        "sentence-transformers/all-MiniLM-L6-v2", "timm/vit_small_patch16_224.augreg_in21k",
        num_tokens=16, token_dim=32, text_token_source="attention", image_token_source="attention",
    ))
    loss = st_oblique.ObliqueContrastiveLoss(model, **SPARO.loss_options)   # mean of 16 cosines, CLIP's temperature
"""


@torch.no_grad()
def init_heads_from_projections(pooling: ObliquePooling, projections: dict[str, Tensor]) -> None:
    """Start the heads of ``pooling`` from a CLIP model's projections.

    Token k of a modality's head gets columns ``[b*d, (b+1)*d)`` of that modality's projection, with
    ``b = k mod (P / d)``, so the K tokens start as the K consecutive pieces of the CLIP embedding.

    Args:
        pooling: a per-modality :class:`ObliquePooling`.
        projections: ``{modality: (in_features, P)}`` matrices (CLIP's projections, transposed to input-major).
            A modality whose width or P does not fit (P not a multiple of d) keeps its random head, with a log
            message.
    """
    for modality, matrix in projections.items():
        head = pooling.heads[modality]
        weight = head.projection
        in_features, token_dim = weight.shape[-2:]
        width = matrix.shape[-1]
        if matrix.shape[0] != in_features or width % token_dim:
            logger.info(
                f"The {modality} projection {tuple(matrix.shape)} does not fit heads of shape {tuple(weight.shape)} "
                "(its width must be a multiple of token_dim); the head keeps its random initialisation."
            )
            continue
        blocks = matrix.detach().to(weight.dtype).reshape(in_features, width // token_dim, token_dim)
        if weight.ndim == 3:
            weight.copy_(blocks.permute(1, 0, 2)[torch.arange(weight.shape[0]) % blocks.shape[1]])
        else:
            weight.copy_(blocks[:, 0])


def _check_late_source(builder: str, token_source: str | None) -> bool:
    """Whether a CLIP-like builder gets late class tokens (``token_source="class_attention"``)."""
    if token_source not in (None, "class_attention"):
        raise ValueError(
            f"{builder} takes token_source=None (K class tokens inside both towers) or 'class_attention' (K class "
            f"tokens that join after the unchanged towers), got {token_source!r}."
        )
    return token_source == "class_attention"


def _load_transformer(
    module_class: type[ClassTokenTransformer],
    model_name_or_path: str,
    *,
    num_class_tokens: int | None,
    loading: dict[str, Any],
    max_seq_length: int | None = None,
) -> ClassTokenTransformer:
    """Load a (subclass of) ClassTokenTransformer from a Hugging Face model or a Sentence Transformers folder.

    ``num_class_tokens=None`` keeps what the folder says (1 for a model that is not oblique yet).

    Raises:
        ValueError: the folder is a saved oblique model with another number of class tokens.
    """
    hub = {key: loading[key] for key in ("cache_folder", "revision", "token", "local_files_only") if key in loading}
    init_defaults: dict[str, Any] = {} if num_class_tokens is None else {"num_class_tokens": num_class_tokens}
    if max_seq_length is not None:
        init_defaults["max_seq_length"] = max_seq_length
    module = module_class.load(
        model_name_or_path,
        subfolder=_transformer_subfolder(model_name_or_path, **hub),
        init_defaults=init_defaults,
        **loading,
    )
    if num_class_tokens is not None and module.num_class_tokens != num_class_tokens:
        raise ValueError(
            f"{model_name_or_path} was saved with {module.num_class_tokens} class tokens, but {num_class_tokens} "
            f"were asked for; use num_tokens={module.num_class_tokens} or start from the original backbone."
        )
    if max_seq_length is not None:
        module.max_seq_length = max_seq_length
    return module


def _oblique_model(
    input_module: Module, pooling: ObliquePooling, *, device: str | None, base_model: str | list[str] | None
) -> ObliqueSentenceTransformer:
    model = ObliqueSentenceTransformer(modules=[input_module, pooling], device=device, similarity_fn_name="dot")
    if base_model is not None:
        model.model_card_data.base_model = base_model
    return model


def _hf_loading(
    loading: LoadingOptions,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    config_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ST's ``Transformer.load`` for one Hugging Face backbone.

    The ``*_kwargs`` arguments add to or override the shared ones of ``loading`` key by key (one tower's own).
    """
    merged = {
        "model_kwargs": {**(loading.get("model_kwargs") or {}), **(model_kwargs or {})},
        "processor_kwargs": {**(loading.get("processor_kwargs") or {}), **(processor_kwargs or {})},
        "config_kwargs": {**(loading.get("config_kwargs") or {}), **(config_kwargs or {})},
    }
    hub = {name: loading.get(name) for name in ("cache_folder", "revision", "token")}
    flags = {name: bool(loading.get(name)) for name in ("local_files_only", "trust_remote_code")}
    return {**hub, **flags, **merged}


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


def _check_open_clip_options(model_name: str, pretrained: str | None, loading: LoadingOptions) -> None:
    """Refuse, with what to do instead, the loading options ``open_clip.create_model`` cannot honour."""
    revision, token = loading["revision"], loading["token"]
    local_files_only, trust_remote_code = loading["local_files_only"], loading["trust_remote_code"]
    if revision is not None:
        raise ValueError(
            f"oblique_open_clip cannot use revision={revision!r}: open_clip.create_model has no revision and always "
            "downloads the default branch. Download that revision yourself "
            "(huggingface_hub.snapshot_download(repo_id, revision=...)) and pass its folder as model_name."
        )
    if token is not None:
        raise ValueError(
            "oblique_open_clip cannot use token=...: open_clip.create_model takes no token. Log in with "
            "`hf auth login` or set the HF_TOKEN environment variable; open_clip's downloads use it."
        )
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code does not apply to open_clip models (open_clip runs no code from model "
            "repositories); leave it False."
        )
    if local_files_only and _open_clip_downloads(model_name, pretrained):
        raise ValueError(
            f"oblique_open_clip cannot promise local_files_only for {model_name!r} (pretrained={pretrained!r}): "
            "open_clip downloads hf-hub: models and pretrained tags and has no offline switch of its own. Set "
            "HF_HUB_OFFLINE=1 before starting Python to use the cached files, or pass a local folder or "
            "checkpoint file."
        )


def _open_clip_downloads(model_name: str, pretrained: str | None) -> bool:
    """Whether ``open_clip.create_model(model_name, pretrained)`` downloads files (config or weights)."""
    if model_name.startswith("hf-hub:"):
        return True
    if model_name.startswith("local-dir:") or os.path.isdir(model_name):
        return False
    return pretrained is not None and not os.path.isfile(pretrained)


_TRANSFORMER_TYPES = {
    "Transformer",
    "CLIPModel",  # Sentence Transformers' legacy CLIP module
    "ClassTokenTransformer",
    "CLIPClassTokenTransformer",
    "ImageClassTokenTransformer",
}


def _transformer_subfolder(model_name_or_path: str, **hub: Any) -> str:
    """Folder of the Transformer module inside a Sentence Transformers model ("" for a plain HF model)."""
    modules_path = load_file_path(model_name_or_path, "modules.json", **hub)
    if modules_path is None:
        return ""
    with open(modules_path, encoding="utf-8") as handle:
        modules = json.load(handle)
    for entry in modules:
        if entry.get("type", "").rsplit(".", 1)[-1] in _TRANSFORMER_TYPES:
            return entry.get("path", "")
    raise ValueError(
        f"{model_name_or_path} is a Sentence Transformers model without a Transformer module "
        f"({[entry.get('type') for entry in modules]}); pass a Hugging Face model instead."
    )
