"""Locked towers: pretrained backbones frozen and kept in eval mode (LiT), recorded in the module's config.

:class:`TowerLockMixin` gives st-oblique's input modules a ``locked_towers`` config key, so that a locked tower
stays locked after saving and loading (``requires_grad`` is not saved with the weights) and
:func:`~st_oblique.describe_model` counts it as frozen.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentence_transformers.base.modules import Router
from torch import nn

LOCKED_TOWERS_KEY = "locked_towers"
"""Config key of the locked modalities (written only when a tower is locked, so older saves are unchanged)."""


class TowerLockMixin:
    """``locked_towers``: the modalities whose pretrained tower is frozen and kept in eval mode.

    A locked tower's parameters get ``requires_grad=False`` and its modules stay in eval mode while the model
    trains (BatchNorm statistics and dropout stay those of the pretrained model, as in LiT); what st-oblique adds
    (extra class tokens, the oblique heads) keeps training. The list is saved in the module config and applied
    again when the model is loaded.

    Subclasses implement :meth:`_tower_parts` and call :meth:`lock_towers` at the end of ``__init__``.

    Example::

        import st_oblique

        model = st_oblique.oblique_clip("openai/clip-vit-base-patch32")
        model[0].lock_towers(["image"])  # LiT: CLIP's vision tower is frozen
        model.save("lit")                # st_oblique.load("lit") has it frozen too
    """

    locked_towers: list[str]

    def _tower_parts(self) -> dict[str, tuple[list[nn.Parameter], list[nn.Module]]]:
        """``{modality: (parameters to freeze, modules to keep in eval mode)}`` of the pretrained towers."""
        raise NotImplementedError

    def tower_parameters(self, modality: str) -> list[nn.Parameter]:
        """The parameters of the pretrained ``modality`` tower (those :meth:`lock_towers` freezes).

        Raises:
            ValueError: the module has no ``modality`` tower.
        """
        return self._parts_of(modality)[0]

    def lock_towers(self, modalities: Iterable[str]) -> None:
        """Freeze the pretrained towers of ``modalities`` and keep them in eval mode; recorded in the config.

        Args:
            modalities: e.g. ``["image"]``; towers already locked stay locked.

        Raises:
            ValueError: a modality the module has no tower for, or a single string instead of a list.
        """
        if isinstance(modalities, str):
            raise ValueError(f"lock_towers takes a list of modalities, e.g. [{modalities!r}], not a string.")
        modalities = list(modalities)
        for modality in modalities:
            for parameter in self._parts_of(modality)[0]:
                parameter.requires_grad_(False)
        self.locked_towers = sorted({*getattr(self, LOCKED_TOWERS_KEY, []), *modalities})
        self.train(self.training)

    def train(self, mode: bool = True):
        """``nn.Module.train``, except that locked towers stay in eval mode."""
        super().train(mode)
        for modality in getattr(self, LOCKED_TOWERS_KEY, ()):
            for module in self._parts_of(modality)[1]:
                module.eval()
        return self

    def _parts_of(self, modality: str) -> tuple[list[nn.Parameter], list[nn.Module]]:
        parts = self._tower_parts()
        if modality not in parts:
            raise ValueError(
                f"{type(self).__name__} has no {modality!r} tower to lock; its towers are {sorted(parts)}."
            )
        return parts[modality]


def without_empty_lock(config: dict) -> dict:
    """A module config without ``locked_towers`` when no tower is locked (keeps unlocked saves as they were)."""
    if not config.get(LOCKED_TOWERS_KEY):
        config.pop(LOCKED_TOWERS_KEY, None)
    return config


def lock_tower(model: nn.Module, modality: str) -> list[nn.Parameter]:
    """Lock the pretrained ``modality`` tower of an oblique model (see :class:`TowerLockMixin`).

    The tower is found in the model's first module: a Router's ``modality`` route (dual encoders), or an input
    module with both towers (CLIP, open_clip) or one (a text model).

    Args:
        model: an oblique SentenceTransformer.
        modality: ``"image"`` or ``"text"``.

    Returns:
        The tower's parameters (all now frozen).

    Raises:
        ValueError: the model has no such tower, or its first module cannot lock towers.

    Example::

        import st_oblique
        from st_oblique.modules.tower_lock import lock_tower

        model = st_oblique.oblique_dual_encoder("sentence-transformers/all-MiniLM-L6-v2", "timm/tf_efficientnet_lite0.in1k")
        frozen = lock_tower(model, "image")  # LiT; saved with the model
    """
    first = model[0]
    if isinstance(first, Router):
        if modality not in first.sub_modules:
            raise ValueError(f"This model has no {modality} tower to lock.")
        first = first.sub_modules[modality][0]
    if not isinstance(first, TowerLockMixin) or modality not in first._tower_parts():
        raise ValueError(f"Cannot lock the {modality} tower of a model whose first module is {type(first).__name__}.")
    first.lock_towers([modality])
    return first.tower_parameters(modality)


def locked_towers(model: nn.Module) -> list[str]:
    """The modalities whose pretrained tower is locked in ``model`` (from its input modules' ``locked_towers``)."""
    return sorted({modality for module in model.modules() if isinstance(module, TowerLockMixin)
                   for modality in module.locked_towers})
