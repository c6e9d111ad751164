"""Training oblique models with Sentence Transformers' trainer: :class:`ObliqueTrainer`
(:mod:`~st_oblique.training.trainer`)."""

from st_oblique.training.trainer import ObliqueTrainer

__all__ = ["ObliqueTrainer"]
