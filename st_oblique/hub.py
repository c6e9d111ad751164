"""Pushing oblique models to the Hugging Face Hub, with errors that say what went wrong and what to do.

``model.push_to_hub("user/oblique-clip")`` is Sentence Transformers' own method; on an
:class:`~st_oblique.ObliqueSentenceTransformer` its failures carry an explanation (see
:func:`explain_push_errors`). :func:`push_to_hub` adds what a command line needs: pushing a saved folder,
evaluation results on the card and in the commit message, private repositories, branches and pull requests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from st_oblique.description import ObliqueModelDescription
    from st_oblique.model_card import EvaluationResults

# Class names of the transport errors raised by the HTTP client huggingface_hub uses (httpx or its fork).
_TRANSPORT_ERROR_NAMES = {"TransportError", "ConnectError", "TimeoutException", "NetworkError", "ProxyError"}


class HubPushError(ConnectionError):
    """The Hub could not be reached while pushing; the message says which endpoint and what to check."""


@contextlib.contextmanager
def explain_push_errors(repo_id: str, local_note: str = "Nothing local was changed.") -> Iterator[None]:
    """Add an explanation and a fix to errors raised while pushing ``repo_id``.

    HTTP errors from the Hub keep their type (``HfHubHTTPError`` and subclasses, so existing ``except`` clauses
    still match) and get a sentence appended; connection failures become :class:`HubPushError`.

    Args:
        repo_id: the repository being pushed (named in messages).
        local_note: what happened to local files, appended to every message.
    """
    try:
        yield
    except HubPushError:
        raise
    except HfHubHTTPError as error:
        if not getattr(error, "_st_oblique_explained", False):  # nested pushes explain once
            error.append_to_message("\n\n" + _explain_http_error(error, repo_id) + " " + local_note)
            error._st_oblique_explained = True
        raise
    except OfflineModeIsEnabled as error:
        raise HubPushError(
            f"Cannot push {repo_id}: huggingface_hub is in offline mode (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE "
            f"to upload. {local_note}"
        ) from error
    except Exception as error:
        if not _is_transport_error(error):
            raise
        raise HubPushError(
            f"Cannot push {repo_id}: the Hub at {hub_constants.ENDPOINT} could not be reached "
            f"({type(error).__name__}: {error}). Check the network connection and the HF_ENDPOINT environment "
            f"variable, then push again. {local_note}"
        ) from error


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
            folder, a dict or a JSON path; see :func:`st_oblique.model_card.format_evaluation_results`): shown as
            a table on the card, which then replaces the card on the Hub (a saved folder's README keeps
            everything else, e.g. the training details).
        replace_model_card: replace a README that already exists in the repository.

    Returns:
        The URL of the commit (or of the pull request with ``create_pr=True``).

    Raises:
        HubPushError: the Hub could not be reached.
        huggingface_hub.errors.HfHubHTTPError: the Hub refused the push (the message explains why).

    Example::

        from st_oblique.hub import push_to_hub

        url = push_to_hub("runs/oblique-lit", "me/oblique-lit", private=True,
                          evaluation_results="runs/oblique-lit/eval/summary.json")
    """
    from st_oblique.description import describe_model
    from st_oblique.model_card import set_evaluation_results

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not (path / "modules.json").is_file():
            raise ValueError(f"{path} is not a saved Sentence Transformers model (no modules.json); save the model first.")
        from st_oblique.model import load

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
    from st_oblique.model_card import format_evaluation_results

    message = f"Upload oblique model (K={description.num_tokens}, d={description.token_dim})"
    results = format_evaluation_results(evaluation_results)
    if results:
        metrics = [f"{task + ' ' if task else ''}{metric}={value:.4g}" for task, metric, value in results["rows"][:3]]
        message += ": " + ", ".join(metrics)
    return message


def _explain_http_error(error: HfHubHTTPError, repo_id: str) -> str:
    status = error.response.status_code if error.response is not None else None
    url = str(error.response.request.url) if error.response is not None and error.response.request else ""
    creating = url.endswith("/api/repos/create")
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your account"
    if status == 401:
        return (
            f"The Hub rejected the token (401 Unauthorized) while pushing {repo_id}: log in with `hf auth login`, "
            "or pass token=... / set HF_TOKEN to a token with write access."
        )
    if status == 403:
        return (
            f"The token may not write to '{namespace}' (403 Forbidden): use a token with write access to that "
            "namespace (fine-grained tokens need the 'write' permission on it)."
        )
    if status == 409 and creating:
        return f"The repository {repo_id} already exists: pass exist_ok=True to push to it."
    if status == 404:
        return f"The repository {repo_id} or the branch does not exist, or the token cannot see it."
    if status is not None and status >= 500:
        stage = "creating the repository" if creating else "uploading (no commit was made)"
        return f"The Hub failed with a server error (HTTP {status}) while {stage}; try again later."
    return f"The Hub refused the push of {repo_id} (HTTP {status})."


def _is_transport_error(error: BaseException) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _TRANSPORT_ERROR_NAMES for cls in type(error).__mro__)
