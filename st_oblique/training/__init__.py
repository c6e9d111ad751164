"""Training oblique models with Sentence Transformers' trainer: :class:`ObliqueTrainer`
(:mod:`~st_oblique.training.trainer`); :func:`freeze_unreached_parameters` (what the loss cannot reach, frozen
before a multi-process run), :func:`parameter_fingerprints` (did the processes end with the same weights?) and
:func:`leave_process_group` (the process group released before the interpreter exits)."""

from st_oblique.training.parameter_fingerprints import parameter_fingerprint, parameter_fingerprints
from st_oblique.training.process_group import leave_process_group, unwrap_model_in_loss
from st_oblique.training.trainer import ObliqueTrainer
from st_oblique.training.unreached_parameters import freeze_unreached_parameters

__all__ = [
    "ObliqueTrainer",
    "freeze_unreached_parameters",
    "leave_process_group",
    "parameter_fingerprint",
    "parameter_fingerprints",
    "unwrap_model_in_loss",
]
