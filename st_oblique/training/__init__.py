"""Training oblique models with Sentence Transformers' trainer: :class:`ObliqueTrainer`
(:mod:`~st_oblique.training.trainer`); :func:`freeze_unreached_parameters` (what the loss cannot reach, frozen
before a multi-process run) and :func:`parameter_fingerprints` (did the processes end with the same weights?)."""

from st_oblique.training.parameter_fingerprints import parameter_fingerprint, parameter_fingerprints
from st_oblique.training.trainer import ObliqueTrainer
from st_oblique.training.unreached_parameters import freeze_unreached_parameters

__all__ = ["ObliqueTrainer", "freeze_unreached_parameters", "parameter_fingerprint", "parameter_fingerprints"]
