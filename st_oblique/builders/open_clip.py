"""The builder of the ``open_clip`` family: an oblique image-text model from any open_clip model."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torch import nn

from st_oblique.builders.assembly import init_heads_from_projections, oblique_model
from st_oblique.builders.late_tokens import check_late_source, late_class_tokens
from st_oblique.model.loading_options import LoadingOptions, with_loading_options
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.open_clip_encoder import OpenCLIPEncoder

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["oblique_open_clip"]


def _open_clip_hub_models(arguments: dict[str, Any]) -> list[str]:
    """The Hub repositories ``open_clip.create_model(model_name, pretrained)`` downloads from (for the offline check),
    after the loading options open_clip cannot honour are refused."""
    model_name, pretrained = arguments["model_name"], arguments.get("pretrained")
    _check_open_clip_options(model_name, pretrained, arguments)
    if model_name.startswith("hf-hub:"):
        return [model_name.removeprefix("hf-hub:").split("@")[0]]
    if not _open_clip_downloads(model_name, pretrained):
        return []
    import open_clip

    repository = open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub", "")
    return [repository.strip("/")] if repository else []


@with_loading_options(hub_models=_open_clip_hub_models)
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
            class-attention blocks, as in :func:`~st_oblique.builders.text.oblique_text_model`.
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
        into ``(N, K*d)`` embeddings. Its card names the backbone as base model, unless it has random weights (an
        architecture name without ``pretrained``).

    Raises:
        ValueError: an option open_clip cannot honour (see above).

    Example::

        import st_oblique

        model = st_oblique.oblique_open_clip("ViT-B-32", "laion2b_s34b_b79k", num_tokens=16, token_dim=32)
        embeddings = model.encode(["a diagram", "a dog", "a cat"])  # (3, 512)
        model.save("oblique-vit-b-32")  # open_clip.create_model("local-dir:oblique-vit-b-32") loads the backbone
    """
    _check_open_clip_options(model_name, pretrained, loading)
    late_tokens = check_late_source("oblique_open_clip", token_source)
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
    late = late_class_tokens(
        {modality: (encoder.model, modality, None) for modality in ("text", "image")} if late_tokens else {},
        encoder.embedding_dimensions,
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    sources = {"text": "last", "image": encoder.image_token_source}
    pooling = late.pooling(
        encoder.embedding_dimensions,
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=dict.fromkeys(sources, "class_attention") if late_tokens else sources,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
    )
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
    if not _loads_weights(model_name, pretrained):
        base_model = None  # a built-in architecture with random weights: there is no base model to link to
    return oblique_model(encoder, pooling, device=loading["device"], base_model=base_model)


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


def _loads_weights(model_name: str, pretrained: str | None) -> bool:
    """Whether ``open_clip.create_model(model_name, pretrained)`` starts from trained weights."""
    return pretrained is not None or model_name.startswith(("hf-hub:", "local-dir:")) or os.path.isdir(model_name)


def _open_clip_downloads(model_name: str, pretrained: str | None) -> bool:
    """Whether ``open_clip.create_model(model_name, pretrained)`` downloads files (config or weights)."""
    if model_name.startswith("hf-hub:"):
        return True
    if model_name.startswith("local-dir:") or os.path.isdir(model_name):
        return False
    return pretrained is not None and not os.path.isfile(pretrained)
