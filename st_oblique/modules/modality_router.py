"""ModalityRouter: separate text and image towers behind one input module (LiT-style dual encoders)."""

from __future__ import annotations

from typing import Any

from sentence_transformers.base.modules import Module, Router


class ModalityRouter(Router):
    """ST's :class:`~sentence_transformers.base.modules.Router` that routes by modality only.

    Each input batch goes to the route named after its modality (``"text"`` or ``"image"``, inferred by ST from the
    inputs), whatever the ``task`` (``encode_query`` / ``encode_document`` use the same towers): it is a Router with
    the public ``route_mappings={(None, "text"): "text", (None, "image"): "image"}``. Saving, loading,
    ``preprocess`` and ``forward`` are the Router's own.

    Why a subclass: ST's trainer demands ``router_mapping`` (dataset column -> route) for models whose child is
    exactly a ``Router``, because a query/document router cannot know which column is which. A modality router does
    not need it: each column is routed by the modality of its values. So a dual encoder trains on a dataset with an
    ``Image()`` column and a caption column with no extra training arguments (a behaviour of ST's trainer that
    ``tests/test_compat.py`` pins, see :mod:`st_oblique._compat`).

    A batch mixing images and texts is rejected with ST's error ("This batch mixes multiple modalities ... Encode
    each modality separately"), as for any ST model.

    Args:
        text: the modules of the text route, the first being an input module (e.g.
            :class:`~st_oblique.modules.ClassTokenTransformer`).
        image: the modules of the image route (e.g. :class:`~st_oblique.modules.ImageClassTokenTransformer`).

    Example::

        from sentence_transformers import SentenceTransformer
        from st_oblique import ObliquePooling
        from st_oblique.modules import ClassTokenTransformer, ImageClassTokenTransformer, ModalityRouter

        text = ClassTokenTransformer("sentence-transformers/all-MiniLM-L6-v2", num_class_tokens=16)
        image = ImageClassTokenTransformer("timm/efficientnet_b0.ra_in1k")
        pooling = ObliquePooling({"text": 384, "image": 1280}, num_tokens=16, token_dim=32,
                                 token_source={"text": "first", "image": "attention"})
        model = SentenceTransformer(modules=[ModalityRouter(text=[text], image=[image]), pooling],
                                    similarity_fn_name="dot")
    """

    def __init__(
        self,
        sub_modules: dict[str, list[Module]] | None = None,
        *,
        text: list[Module] | None = None,
        image: list[Module] | None = None,
        **router_kwargs: Any,
    ) -> None:
        # `sub_modules` and `router_kwargs` (default_route, route_mappings...) are what Router.load passes back.
        if sub_modules is None:
            sub_modules = {name: modules for name, modules in (("text", text), ("image", image)) if modules}
        elif text is not None or image is not None:
            raise ValueError("Pass either sub_modules or text=/image=, not both.")
        if not sub_modules or set(sub_modules) - {"text", "image"}:
            raise ValueError(f"ModalityRouter routes 'text' and/or 'image'; got routes {sorted(sub_modules or {})}.")
        # Router's public (task, modality) mappings: any task, routed by the modality of the batch.
        by_modality = {(None, modality): modality for modality in sub_modules}
        saved = router_kwargs.get("route_mappings")
        if saved and dict(saved) != by_modality:
            raise ValueError(
                f"ModalityRouter routes by modality only ({by_modality}); got route_mappings={saved}. Use ST's "
                "Router for routes by task."
            )
        super().__init__(sub_modules, default_route=router_kwargs.get("default_route"), route_mappings=by_modality)

    @property
    def class_token_placement(self) -> dict[str, str]:
        """Where the class tokens sit, per modality (from each route's input module)."""
        placement: dict[str, str] = {}
        for route in self.sub_modules.values():
            placement.update(getattr(route[0], "class_token_placement", {}))
        return placement

    @property
    def embedding_dimensions(self) -> dict[str, int]:
        """Width of each route's token states: ``{"text": H_t, "image": H_v}``."""
        return {name: route[0].get_embedding_dimension() for name, route in self.sub_modules.items()}
