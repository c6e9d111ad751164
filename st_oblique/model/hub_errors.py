"""What a failed push to the Hugging Face Hub means: the explanations added to the Hub's errors.

``ObliqueSentenceTransformer.push_to_hub`` and :func:`st_oblique.model.push.push_to_hub` run the push inside
:func:`explain_push_errors`: HTTP errors keep their type and get a sentence saying why and what to do; a Hub that
cannot be reached becomes :class:`~st_oblique.HubPushError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from st_oblique.errors import HubPushError

__all__ = ["explain_push_errors"]

# Class names of the transport errors raised by the HTTP client huggingface_hub uses (httpx or its fork).
_TRANSPORT_ERROR_NAMES = {"TransportError", "ConnectError", "TimeoutException", "NetworkError", "ProxyError"}


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
