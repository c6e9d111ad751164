"""st-oblique: oblique-manifold embeddings (K unit tokens of size d) for sentence-transformers.

The library, from the bottom up (each layer imports only the ones below it; ``.ci/run`` checks this with
import-linter, see ``pyproject.toml``):

- at the very bottom :mod:`~st_oblique.validators`, the rules arguments and options are checked by (torch-free);
- the base: :mod:`~st_oblique.manifold` (the math), :mod:`~st_oblique.errors`, :mod:`~st_oblique.citations`,
  :mod:`~st_oblique.result_records` (evaluation records), :mod:`~st_oblique._compat` (every private upstream hook);
  :mod:`~st_oblique.output_folder` and :mod:`~st_oblique.devices`;
- :mod:`~st_oblique.data`: the image loader, dataset readers and templates, training-data checks;
- :mod:`~st_oblique.modules`: Sentence Transformers modules (the pooling, class tokens, towers) and K, d of a model;
- :mod:`~st_oblique.losses` and :mod:`~st_oblique.diagnostics` (explanations, token collapse);
- :mod:`~st_oblique.model`: :class:`ObliqueSentenceTransformer`, :func:`load`, its files, card and the Hub;
- :mod:`~st_oblique.builders` and :mod:`~st_oblique.converters`: models from backbones and from the paper's release;
- :mod:`~st_oblique.training` (:class:`ObliqueTrainer`) and :mod:`~st_oblique.evaluation` (the harness).

The ``st-oblique`` command and its pipelines are the application, :mod:`st_oblique.app`, built on top.
Public names are imported lazily, so ``import st_oblique`` is cheap until a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_oblique._version import __version__
from st_oblique.builders.families import builder_exports
from st_oblique.lazy_exports import lazy_exports

# public name -> module that defines it
_PUBLIC: dict[str, str] = {
    "manifold": "st_oblique.manifold",
    "ObliquePooling": "st_oblique.modules.pooling",
    "ClassTokenTransformer": "st_oblique.modules.class_token_transformer",
    "ObliqueSentenceTransformer": "st_oblique.model.sentence_transformer",
    "load": "st_oblique.model.sentence_transformer",
    **builder_exports(),  # oblique_text_model, oblique_clip, ...: one per backbone family
    "ObliqueContrastiveLoss": "st_oblique.losses.contrastive",
    "CachedObliqueContrastiveLoss": "st_oblique.losses.cached",
    "ObliqueSigmoidLoss": "st_oblique.losses.sigmoid",
    "ObliqueMatryoshkaLoss": "st_oblique.losses.matryoshka",
    "LogitScaleCallback": "st_oblique.training.logit_scale_callback",
    "LogitScale": "st_oblique.modules.logit_scale",
    "ObliqueTrainer": "st_oblique.training.trainer",
    "ObliqueShape": "st_oblique.modules.shape",
    "oblique_shape": "st_oblique.modules.shape",
    "evaluation": "st_oblique.evaluation",
    "ObliqueModelCardData": "st_oblique.model.card",
    "describe_model": "st_oblique.model.description",
    "ObliqueModelDescription": "st_oblique.model.description",
    "push_to_hub": "st_oblique.model.push",
    "load_image": "st_oblique.data.images",
    # the error hierarchy (st_oblique.errors)
    "ObliqueError": "st_oblique.errors",
    "ObliqueLoadError": "st_oblique.errors",
    "ObliqueInputError": "st_oblique.errors",
    "ObliqueConfigError": "st_oblique.errors",
    "TrainingDataError": "st_oblique.errors",
    "CheckpointError": "st_oblique.errors",
    "OutputDirError": "st_oblique.errors",
    "HubPushError": "st_oblique.errors",
    "PushAfterTrainingError": "st_oblique.errors",
    "ExportError": "st_oblique.errors",
    "MissingExtraError": "st_oblique.errors",
    # exported models for CPU serving (st_oblique.export is also the function: st_oblique.export(model, folder))
    "export": "st_oblique.export",
}

__all__ = ["__version__", *_PUBLIC]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


if TYPE_CHECKING:
    from st_oblique import evaluation, export, manifold
    from st_oblique.builders import oblique_clip, oblique_dual_encoder, oblique_open_clip, oblique_text_model
    from st_oblique.data.images import load_image
    from st_oblique.errors import (
        CheckpointError,
        ExportError,
        HubPushError,
        MissingExtraError,
        ObliqueConfigError,
        ObliqueError,
        ObliqueInputError,
        ObliqueLoadError,
        OutputDirError,
        PushAfterTrainingError,
        TrainingDataError,
    )
    from st_oblique.losses.cached import CachedObliqueContrastiveLoss
    from st_oblique.losses.contrastive import ObliqueContrastiveLoss
    from st_oblique.losses.matryoshka import ObliqueMatryoshkaLoss
    from st_oblique.losses.sigmoid import ObliqueSigmoidLoss
    from st_oblique.model.card import ObliqueModelCardData
    from st_oblique.model.description import ObliqueModelDescription, describe_model
    from st_oblique.model.push import push_to_hub
    from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer, load
    from st_oblique.modules.class_token_transformer import ClassTokenTransformer
    from st_oblique.modules.logit_scale import LogitScale
    from st_oblique.modules.pooling import ObliquePooling
    from st_oblique.modules.shape import ObliqueShape, oblique_shape
    from st_oblique.training.logit_scale_callback import LogitScaleCallback
    from st_oblique.training.trainer import ObliqueTrainer
