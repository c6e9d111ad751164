"""ObliqueTrainer: Sentence Transformers' trainer with the learnable temperature in its logs and checkpoints.

A plain ``SentenceTransformerTrainer`` (or ``model.fit``) already trains oblique models fully: the losses are
ordinary Sentence Transformers losses, a learnable scale gets no weight decay and its value is saved with the
model. This subclass adds :class:`~st_oblique.losses.LogitScaleCallback` (the scale and SigLIP's bias in the
logs, restored on resume). ``st-oblique train`` uses it.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformerTrainer

from st_oblique.losses.logit_scale_callback import LogitScaleCallback, oblique_losses

__all__ = ["ObliqueTrainer"]


class ObliqueTrainer(SentenceTransformerTrainer):
    """:class:`~sentence_transformers.SentenceTransformerTrainer` for oblique models (same arguments).

    Differences: when the loss is (or contains) an st-oblique loss with a learnable scale or bias, a
    :class:`~st_oblique.losses.LogitScaleCallback` logs ``logit_scale`` (and ``logit_bias``) with the training
    loss, before the reporting integrations see the logs (W&B, TensorBoard...), saves them with every checkpoint
    and restores them when training resumes (``trainer.train(resume_from_checkpoint=...)``).

    Example::

        from sentence_transformers import SentenceTransformerTrainingArguments
        import st_oblique

        loss = st_oblique.ObliqueContrastiveLoss(model, learnable_scale=True, max_scale=3.95)
        args = SentenceTransformerTrainingArguments(output_dir="out", logging_steps=10)
        trainer = st_oblique.ObliqueTrainer(model=model, args=args, train_dataset=train, loss=loss)
        trainer.train()
        print(trainer.state.log_history[-2]["logit_scale"])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        losses = self.loss.values() if isinstance(self.loss, dict) else [self.loss]
        if any(oblique_losses(loss) for loss in losses):
            # Right after DefaultFlowCallback, as SparseEncoderTrainer places its SpladeLoss callback: on_log then
            # runs before the reporting callbacks, which log the scale too.
            self.callback_handler.callbacks.insert(1, LogitScaleCallback(self))
