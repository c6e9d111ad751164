"""Pushing oblique models to the Hugging Face Hub, with errors that say what went wrong and what to do.

``model.push_to_hub("user/oblique-clip")`` is Sentence Transformers' own method; on an
:class:`~st_oblique.ObliqueSentenceTransformer` its failures carry an explanation (see
:func:`explain_push_errors`). :func:`push_to_hub` adds what a command line needs: pushing a saved folder,
evaluation results on the card and in the commit message, private repositories, branches and pull requests.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentence_transformers import SentenceTransformer

from st_oblique.model.card import EvaluationResults, format_evaluation_results, set_evaluation_results
from st_oblique.model.description import ObliqueModelDescription, describe_model
from st_oblique.model.hub_errors import explain_push_errors
from st_oblique.model.sentence_transformer import load

__all__ = ["push_to_hub"]


def push_to_hub(
    model: SentenceTransformer | str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    exist_ok: bool = False,
    commit_message: str | None = None,
    evaluation_results: EvaluationResults | None = None,
    replace_model_card: bool = False,
) -> str:
    """Push an oblique model (in memory or a saved folder) to the Hub with a card describing it.

    The model is saved to a temporary folder and uploaded in one commit (Sentence Transformers'
    ``push_to_hub``); a saved folder given as ``model`` is loaded and re-saved, never modified.

    Args:
        model: an oblique SentenceTransformer, or the path of a saved one.
        repo_id: ``"user/name"`` or ``"organization/name"``.
        token: a Hub token with write access (default: the one saved by ``hf auth login`` or ``HF_TOKEN``).
        private: create the repository as private (ignored when it exists).
        revision: push to this branch (created from ``main`` when missing).
        create_pr: open a pull request instead of committing to the branch.
        exist_ok: push to an existing repository (otherwise an existing one is an error).
        commit_message: default ``"Upload oblique model (K=.., d=..)"`` followed by up to three metrics.
        evaluation_results: results of the st-oblique evaluation harness (records, ``summary.json``, a results
            folder, a dict or a JSON path; see :func:`st_oblique.model.card.format_evaluation_results`): shown as
            a table on the card, which then replaces the card on the Hub (a saved folder's README keeps
            everything else, e.g. the training details).
        replace_model_card: replace a README that already exists in the repository.

    Returns:
        The URL of the commit (or of the pull request with ``create_pr=True``).

    Raises:
        HubPushError: the Hub could not be reached.
        huggingface_hub.errors.HfHubHTTPError: the Hub refused the push (the message explains why).

    Example::

        from st_oblique.model.push import push_to_hub

        url = push_to_hub("runs/oblique-lit", "me/oblique-lit", private=True,
                          evaluation_results="runs/oblique-lit/eval/summary.json")
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not (path / "modules.json").is_file():
            raise ValueError(f"{path} is not a saved Sentence Transformers model (no modules.json); save the model first.")
        model = load(str(path))
    description = describe_model(model)
    if evaluation_results is not None:
        set_evaluation_results(model, evaluation_results)
        replace_model_card = True
    if commit_message is None:
        commit_message = _default_commit_message(description, evaluation_results)
    with explain_push_errors(repo_id):
        return model.push_to_hub(
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            exist_ok=exist_ok,
            replace_model_card=replace_model_card,
            revision=revision,
            create_pr=create_pr,
        )


def _default_commit_message(
    description: ObliqueModelDescription, evaluation_results: EvaluationResults | None
) -> str:
    message = f"Upload oblique model (K={description.num_tokens}, d={description.token_dim})"
    results = format_evaluation_results(evaluation_results)
    if results:
        metrics = [f"{task + ' ' if task else ''}{metric}={value:.4g}" for task, metric, value in results["rows"][:3]]
        message += ": " + ", ".join(metrics)
    return message
