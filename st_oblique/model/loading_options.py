"""Sentence Transformers' loading options, which every st-oblique builder takes under the same names.

A builder declares them once, as ``**loading: Unpack[LoadingOptions]``, and :func:`with_loading_options` turns
them into explicit keyword-only parameters (in ``inspect.signature``, ``help()`` and IDEs) with Sentence
Transformers' defaults, fills in the defaults before the call, refuses unknown names with the list of valid ones,
adds the options' descriptions to the docstring, and checks in seconds that the Hub models it names can be loaded
(:func:`~st_oblique.model.hub_access.check_hub_access`: a clear error offline instead of minutes of retries; the
cache when the Hub cannot be reached). A builder whose backbone gives an option another meaning
(open_clip, the two towers of a dual encoder) documents that option itself, or declares it in its own signature
(e.g. a ``revision`` per tower); its own entry wins.

Example::

    @with_loading_options
    def oblique_example(model_name_or_path: str, *, num_tokens: int = 16, **loading: Unpack[LoadingOptions]):
        \"\"\"...

        Args:
            model_name_or_path: ...
            num_tokens: K.
            <loading options>
        \"\"\"
        loading["cache_folder"]  # every option is present, with its default when not given
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from st_oblique.model.hub_access import check_hub_access

Builder = TypeVar("Builder", bound=Callable[..., Any])


class LoadingOptions(TypedDict, total=False):
    """The loading options of ``SentenceTransformer(...)``, with its names and meanings."""

    cache_folder: str | None
    revision: str | None
    token: bool | str | None
    local_files_only: bool
    trust_remote_code: bool
    model_kwargs: dict[str, Any] | None
    processor_kwargs: dict[str, Any] | None
    config_kwargs: dict[str, Any] | None
    device: str | None


@dataclass(frozen=True)
class _Option:
    default: Any
    annotation: str
    doc: str


_OPTIONS: dict[str, _Option] = {
    "cache_folder": _Option(None, "str | None", "where downloaded files are cached (default: the Hugging Face cache)."),
    "revision": _Option(None, "str | None", "branch, tag or commit id of the Hub repository."),
    "token": _Option(None, "bool | str | None", "Hub token for private or gated repositories (True: the saved login)."),
    "local_files_only": _Option(False, "bool", "only use local files (no download)."),
    "trust_remote_code": _Option(False, "bool", "allow custom modelling code from the backbone's repository."),
    "model_kwargs": _Option(
        None,
        "dict[str, Any] | None",
        'passed to the backbone\'s ``from_pretrained`` (e.g. ``{"dtype": torch.bfloat16}``).',
    ),
    "processor_kwargs": _Option(
        None, "dict[str, Any] | None", "passed to ``AutoProcessor.from_pretrained`` (tokenizer, image processor)."
    ),
    "config_kwargs": _Option(
        None, "dict[str, Any] | None", "passed to ``AutoConfig.from_pretrained`` (config overrides)."
    ),
    "device": _Option(None, "str | None", "where to put the model (default: Sentence Transformers' choice)."),
}

LOADING_OPTIONS: tuple[str, ...] = tuple(_OPTIONS)
"""The loading options every builder takes, keyword-only, under Sentence Transformers' names and meanings."""

_DOC_MARKER = "<loading options>"

MODEL_NAME_PARAMETERS: tuple[str, ...] = ("model_name_or_path", "text_model", "image_model")
"""Builder parameters that name a Hugging Face model (a local folder or a Hub id), checked by
:func:`~st_oblique.model.hub_access.check_hub_access` before the builder runs. A per-tower ``revision``
(``{"text": ..., "image": ...}``) applies to the ``text_model`` / ``image_model`` of its tower."""

HubModels = Callable[[dict[str, Any]], list[str]]
"""The Hub ids a builder will download, from its bound arguments (for backbones that name models otherwise)."""


def with_loading_options(builder: Builder | None = None, *, hub_models: HubModels | None = None) -> Any:
    """Give ``builder`` (ending in ``**loading: Unpack[LoadingOptions]``) the loading options as explicit parameters.

    Before the builder runs, the models it names (its :data:`MODEL_NAME_PARAMETERS`, or what ``hub_models``
    returns) go through :func:`~st_oblique.model.hub_access.check_hub_access`: a Hub id that cannot be loaded
    (offline, or no answer from the Hub) fails in seconds with what to do, and cached ones are read from the cache
    (``local_files_only=True``) when the Hub cannot be reached.

    Args:
        builder: a function whose last parameter is ``**loading``; its docstring may hold a line
            ``<loading options>`` in its Args section, replaced by the descriptions of the options it does not
            document itself.
        hub_models: the Hub ids the builder downloads, from its bound arguments (default: the values of its
            :data:`MODEL_NAME_PARAMETERS`); used as ``@with_loading_options(hub_models=...)``.

    Returns:
        A function with the same name and docstring whose signature lists every option keyword-only (in
        :data:`LOADING_OPTIONS` order, after the builder's own parameters) and which calls ``builder`` with every
        option present in ``loading``.

    Raises:
        TypeError: at decoration, ``builder`` has no ``**loading``; at a call, an unknown keyword (the message lists
            the valid loading options).
        ObliqueLoadError: at a call, a Hub model that cannot be loaded (see above).
    """
    if builder is None:
        return functools.partial(with_loading_options, hub_models=hub_models)
    signature = inspect.signature(builder)
    declared = signature.parameters
    if "loading" not in declared or declared["loading"].kind is not inspect.Parameter.VAR_KEYWORD:
        raise TypeError(
            f"{builder.__name__} must end in **loading: Unpack[LoadingOptions] to take the loading options."
        )
    own = [p for name, p in declared.items() if name != "loading" and name not in _OPTIONS]
    options = [
        declared[name]
        if name in declared
        else inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=option.default, annotation=option.annotation
        )
        for name, option in _OPTIONS.items()
    ]
    full_signature = signature.replace(parameters=[*own, *options])

    @functools.wraps(builder)
    def build(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = full_signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(
                f"{builder.__name__}(): {error}. Its loading options are {', '.join(LOADING_OPTIONS)} "
                "(Sentence Transformers' names)."
            ) from None
        bound.apply_defaults()
        _check_hub_models(bound.arguments, hub_models)
        return builder(**bound.arguments)  # the options the builder does not declare land in its **loading

    build.__signature__ = full_signature  # type: ignore[attr-defined]
    build.__doc__ = _document_options(builder.__doc__ or "")
    return build  # type: ignore[return-value]


def _check_hub_models(arguments: dict[str, Any], hub_models: HubModels | None) -> None:
    """Check the Hub models of one builder call; switch it to the cache when the Hub cannot be reached."""
    revision = arguments.get("revision")
    if hub_models is not None:
        groups = [(list(hub_models(arguments)), revision)]
    else:
        groups = [
            ([arguments[name]], revision.get(name.removesuffix("_model")) if isinstance(revision, dict) else revision)
            for name in MODEL_NAME_PARAMETERS
            if isinstance(arguments.get(name), str)
        ]
    use_cache = [
        check_hub_access(
            names,
            cache_folder=arguments.get("cache_folder"),
            revision=group_revision if isinstance(group_revision, str) else None,
            local_files_only=bool(arguments.get("local_files_only")),
        )
        for names, group_revision in groups
    ]
    # Hugging Face loaders honour local_files_only; a backbone that names its models otherwise (open_clip) has no
    # such switch, and reaches its cached files after huggingface_hub's retries.
    if any(use_cache) and hub_models is None and "local_files_only" in arguments:
        arguments["local_files_only"] = True


def _document_options(doc: str) -> str:
    """``doc`` with its ``<loading options>`` line replaced by the options it does not describe itself."""
    match = re.search(rf"^([ \t]*){re.escape(_DOC_MARKER)}[ \t]*$", doc, flags=re.MULTILINE)
    if match is None:
        return doc
    indent = match.group(1)
    documented = set(re.findall(rf"^{indent}(\w+)(?:, \w+)*:", doc, flags=re.MULTILINE))
    lines = [f"{indent}{name}: {option.doc}" for name, option in _OPTIONS.items() if name not in documented]
    return doc[: match.start()] + "\n".join(lines) + doc[match.end() :]
