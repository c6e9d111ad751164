"""describe_model: what an oblique model is made of, for the model card and ``st-oblique info``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sentence_transformers.base.modules import Router
from torch import nn

from st_oblique._version import __version__
from st_oblique.model.hub_ids import is_hub_model_id
from st_oblique.modules.pooling import SINGLE_HEAD
from st_oblique.modules.shape import model_temperature, oblique_poolings, oblique_shape
from st_oblique.modules.tower_lock import locked_towers

TOKEN_SOURCE_DESCRIPTIONS: dict[str, str] = {
    "first": "the first K token states (class tokens placed at the front)",
    "last": "the K token states ending at the last real token (class positions appended after EOS)",
    "attention": "K learned queries attending over all token states (attention pooling head)",
    "split": "the mean of the token states projected K times (all K tokens come from one vector)",
    "class_attention": "K class tokens that join after the unchanged tower (CaiT class-attention blocks)",
}
"""How ObliquePooling picks the K token states, per ``token_source``."""

@dataclass
class TowerDescription:
    """One modality's path through the model: backbone, where its K class tokens come from.

    Attributes:
        modality: ``"text"``, ``"image"``, ... (or a Router route name).
        backbone: the backbone architecture, e.g. ``"CLIPModel"`` or ``"BertModel (bert-base-uncased)"``.
        token_source: ObliquePooling's ``token_source`` for this modality.
        class_token_placement: one sentence on where the class tokens sit (from the input module's
            ``class_token_placement`` when it has one, else from ``token_source``).
    """

    modality: str
    backbone: str
    token_source: str
    class_token_placement: str


@dataclass
class ObliqueModelDescription:
    """A summary of an oblique model (see :func:`describe_model`).

    Attributes:
        num_tokens: K, the number of unit tokens per embedding.
        token_dim: d, the size of each token.
        embedding_dimension: K*d, the size of the flat embedding.
        similarity_fn_name: the model's similarity function (``"dot"`` for oblique models).
        score_range: ``(-K, K)``, the range of the oblique similarity (sum of K cosines).
        towers: one :class:`TowerDescription` per modality (or Router route).
        modalities: the input modalities the model accepts.
        per_token_projection: whether each of the K tokens has its own projection.
        layer_norm: whether a LayerNorm precedes the projection.
        logit_scale: the model's logit scale (inverse temperature), a parameter of its ObliquePooling
            (``temperature``) that st-oblique's losses train with; None only for models that have none.
        learnable_logit_scale: whether the scale is learned (else fixed).
        max_logit_scale: the cap of a learned scale (None: no cap).
        logit_bias: the logit bias of a sigmoid (SigLIP) loss; None for other losses.
        parameters: total number of parameters.
        trainable_parameters: parameters with ``requires_grad``.
        locked_towers: modalities whose pretrained tower is locked (frozen, kept in eval mode; recorded in the
            model, so a reloaded model reports it too).
        st_oblique_version: the installed st-oblique release.
    """

    num_tokens: int
    token_dim: int
    embedding_dimension: int
    similarity_fn_name: str
    score_range: tuple[int, int]
    towers: list[TowerDescription] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    per_token_projection: bool = True
    layer_norm: bool = True
    logit_scale: float | None = None
    learnable_logit_scale: bool = False
    max_logit_scale: float | None = None
    logit_bias: float | None = None
    parameters: int = 0
    trainable_parameters: int = 0
    locked_towers: list[str] = field(default_factory=list)
    st_oblique_version: str = ""

    @property
    def temperature(self) -> float | None:
        """``1 / logit_scale``, or None when the scale was not recorded."""
        return None if not self.logit_scale else 1.0 / self.logit_scale

    @property
    def scale_setting(self) -> str:
        """``"learned, capped at 3.95"``, ``"learned, no cap"`` or ``"fixed"``."""
        if not self.learnable_logit_scale:
            return "fixed"
        return "learned, no cap" if self.max_logit_scale is None else f"learned, capped at {self.max_logit_scale:g}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (towers as dicts, ``temperature`` included)."""
        data = asdict(self)
        data["score_range"] = list(self.score_range)
        data["temperature"] = self.temperature
        return data

    def to_text(self) -> str:
        """Aligned ``key: value`` lines for terminals (``st-oblique info``)."""
        scale = "not recorded" if self.logit_scale is None else f"{self.logit_scale:.4g} ({self.scale_setting})"
        rows = [
            ("st-oblique", self.st_oblique_version),
            ("K x d", f"{self.num_tokens} x {self.token_dim} (embedding size {self.embedding_dimension})"),
            ("similarity", f"{self.similarity_fn_name}: sum of {self.num_tokens} per-token cosines, "
             f"range [{self.score_range[0]}, {self.score_range[1]}]"),
            ("logit_scale", scale),
            *((("logit_bias", f"{self.logit_bias:.4g}"),) if self.logit_bias is not None else ()),
            ("parameters", f"{self.parameters:,} in total = {self.trainable_parameters:,} trainable + "
             f"{self.parameters - self.trainable_parameters:,} frozen (as loaded)"),
            *((("locked towers", f"{', '.join(self.locked_towers)} (frozen, kept in eval mode)"),)
              if self.locked_towers else ()),
        ]
        for tower in self.towers:
            rows.append((f"{tower.modality} tower", f"{tower.backbone}; token_source={tower.token_source!r}"))
            rows.append((f"{tower.modality} class tokens", tower.class_token_placement))
        width = max(len(key) for key, _ in rows)
        return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def describe_model(model: nn.Module) -> ObliqueModelDescription:
    """Describe an oblique SentenceTransformer: K, d, towers and class-token placement, scale, size.

    Works for a single backbone with one ObliquePooling (one head per modality or one shared head) and for
    ``Router`` models with one ObliquePooling per route.

    Trainable and frozen parameters are counted from ``requires_grad``. A locked tower (``st-oblique train
    --lock-image-tower`` / ``--lock-text-tower``, or ``lock_towers`` of the input module) is recorded in the model,
    so it counts as frozen after saving and loading too (and is listed in ``locked_towers``). Parameters frozen
    any other way (``st-oblique train --freeze REGEX``, ``requires_grad_(False)`` by hand) are not recorded: the
    loaded model counts them as trainable; the run's ``training_report.json`` (``parameters``) keeps the counts of
    the training run.

    Args:
        model: a SentenceTransformer containing at least one :class:`~st_oblique.ObliquePooling`.

    Returns:
        An :class:`ObliqueModelDescription`.

    Raises:
        ValueError: the model has no ObliquePooling, or its poolings disagree on K or d.

    Example::

        import st_oblique

        model = st_oblique.load("user/oblique-clip")
        info = st_oblique.describe_model(model)
        print(info.num_tokens, info.token_dim, info.logit_scale)
        print(info.to_text())
    """
    shape = oblique_shape(model, required_by="describe_model")
    num_tokens, token_dim = shape.num_tokens, shape.token_dim
    poolings = oblique_poolings(model)
    modalities = [str(modality) for modality in getattr(model, "modalities", ["text"])]
    temperature = model_temperature(model)
    parameters = list(model.parameters())
    return ObliqueModelDescription(
        num_tokens=num_tokens,
        token_dim=token_dim,
        embedding_dimension=num_tokens * token_dim,
        similarity_fn_name=getattr(model, "similarity_fn_name", None) or "cosine",
        score_range=(-num_tokens, num_tokens),
        towers=_towers(model, modalities),
        modalities=modalities,
        per_token_projection=all(pooling.per_token_projection for pooling in poolings),
        layer_norm=all(pooling.layer_norm for pooling in poolings),
        logit_scale=temperature.value,
        learnable_logit_scale=temperature.learnable,
        max_logit_scale=temperature.max_value,
        logit_bias=temperature.bias,
        parameters=sum(parameter.numel() for parameter in parameters),
        trainable_parameters=sum(parameter.numel() for parameter in parameters if parameter.requires_grad),
        locked_towers=locked_towers(model),
        st_oblique_version=__version__,
    )


def _towers(model: nn.Module, modalities: list[str]) -> list[TowerDescription]:
    """One description per modality (single backbone) or per Router route."""
    children = list(model.children())
    router = next((module for module in children if isinstance(module, Router)), None)
    if router is None:
        return _pipeline_towers(children, modalities, route=False)
    after_router = children[children.index(router) + 1 :]
    return [
        tower
        for route, modules in router.sub_modules.items()
        for tower in _pipeline_towers([*modules, *after_router], [route], route=True)
    ]


def _pipeline_towers(modules: list[nn.Module], labels: list[str], route: bool) -> list[TowerDescription]:
    """Towers of one module pipeline (input module ... ObliquePooling).

    ``labels`` name the towers served by a single shared head: the model's modalities, or the route name
    when ``route`` is True (then the input module's only placement applies to the route whatever its name).
    """
    pooling = next((found for module in modules for found in oblique_poolings(module)), None)
    if pooling is None:
        return []
    backbone_module = modules[0]
    placements: dict[str, str] = dict(getattr(backbone_module, "class_token_placement", None) or {})
    heads = pooling.modalities
    if heads == [SINGLE_HEAD]:
        names = labels
    elif route and labels[0] in heads:
        names = labels  # a per-modality pooling after a modality router: this route uses its own head
    else:
        names = heads
    towers = []
    for name in names:
        head = pooling.heads[SINGLE_HEAD if heads == [SINGLE_HEAD] else name]
        source = head.token_source
        placement = placements.get(name)
        if placement is None and route and len(placements) == 1:
            placement = next(iter(placements.values()))
        if source == "class_attention":  # the tower is unchanged: its own placement text would say "no class tokens"
            placement = late_class_token_placement(head.class_attention)
        towers.append(
            TowerDescription(
                modality=name,
                backbone=_backbone_name(backbone_module),
                token_source=source,
                class_token_placement=placement or TOKEN_SOURCE_DESCRIPTIONS[source],
            )
        )
    return towers


def late_class_token_placement(late: nn.Module) -> str:
    """``class_token_placement`` text of a ``"class_attention"`` head (a
    :class:`~st_oblique.modules.class_attention.ClassAttention`)."""
    blocks = len(late.blocks)
    down = "" if late.width == late.in_features else f", the tower's {late.in_features}-wide states projected down to it"
    return (
        f"{late.num_tokens} class tokens that join after the unchanged tower: {blocks} class-attention "
        f"block{'s' if blocks != 1 else ''} (CaiT) of width {late.width}{down}, {late.num_heads} heads, MLP x"
        f"{late.mlp_ratio:g}, {'pre' if late.style.norm_first else 'post'}-norm; the class tokens attend to every "
        "real token state (padding masked) and only they are updated"
    )


def _backbone_name(module: nn.Module) -> str:
    """``"BertModel (user/bert)"`` for a Hub checkpoint, ``"BertModel"`` for a local one, ``"OpenCLIPEncoder
    (ViT-B-32, laion2b_s34b_b79k)"`` for open_clip models, else the class name."""
    inner = getattr(module, "model", None)
    config = getattr(inner, "config", None)
    if inner is None or config is None:
        names = [str(value) for value in (getattr(module, "model_name", None), getattr(module, "pretrained", None)) if value]
        return f"{type(module).__name__} ({', '.join(names)})" if names else type(module).__name__
    name_or_path = str(getattr(config, "_name_or_path", "") or "")
    if "/" in name_or_path and is_hub_model_id(name_or_path):
        return f"{type(inner).__name__} ({name_or_path})"
    return type(inner).__name__
