"""The builder of the ``text`` family: an oblique text embedding model from a bidirectional text encoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_oblique.builders.assembly import oblique_model
from st_oblique.builders.hf_loading import hf_loading, load_transformer
from st_oblique.builders.late_tokens import late_class_tokens
from st_oblique.model.loading_options import LoadingOptions, with_loading_options
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.pooling import SINGLE_HEAD, TokenSource

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["oblique_text_model"]


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
        token_source: ``"first"``, ``"attention"``, ``"split"`` or ``"class_attention"`` (see
            :class:`ObliquePooling`).
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
    backbone = load_transformer(
        ClassTokenTransformer,
        model_name_or_path,
        num_class_tokens=num_tokens if token_source == "first" else 1,
        max_seq_length=max_seq_length,
        loading=hf_loading(loading),
    )
    late = late_class_tokens(
        {SINGLE_HEAD: (backbone.model, "text", backbone.tokenizer)} if token_source == "class_attention" else {},
        {SINGLE_HEAD: backbone.get_embedding_dimension()},
        layers=class_attention_layers,
        width=class_attention_width,
        heads=class_attention_heads,
        mlp_ratio=class_attention_mlp_ratio,
    )
    pooling = late.pooling(
        backbone.get_embedding_dimension(),
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=token_source,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
    )
    return oblique_model(backbone, pooling, device=loading["device"], base_model=model_name_or_path)
