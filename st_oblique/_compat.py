"""Every private hook of a third-party library that st-oblique uses, in one place.

st-oblique integrates with sentence-transformers, transformers, open_clip, timm and mteb through their public
APIs. Where no public route exists, the private hook lives here, with why it is needed and which upstream change
would remove it; ``tests/test_compat.py`` has one canary test per hook that fails loudly, naming the hook, when
an upstream release changes it. Nothing else in the package touches a private attribute of those libraries.

Hooks (sentence-transformers 6.2):

1. ``BaseModel._module_classes``: the ``modules.json`` types a model class resolves without
   ``trust_remote_code``. It is how ``st_oblique.load`` trusts exactly the installed st-oblique module classes
   (ST's trainer uses the same mechanism for checkpoint reloads). Removed if ST accepts trusted module classes
   publicly (e.g. a ``module_classes=`` argument to ``SentenceTransformer``).
2. ``SentenceTransformer._get_model_config``: the dict saved as ``config_sentence_transformers.json``. Extended
   with ``requirements`` (which ST checks on loading, with a ``pip install`` hint, but never writes). Removed if ST
   lets a model declare requirements publicly.
3. ``SentenceTransformer._similarity_fn_name``: whether a similarity function was chosen at all (the public
   property answers ``"cosine"`` for "not chosen" and records that choice). Removed if ST exposes "unset".
4. ``BaseModel._model_card_text``: the README a model was loaded with, which ST reuses when saving. Read to
   refuse cards that tell users to load an oblique model without ``trust_remote_code``, and edited to put the
   evaluation results into a reused card. Removed if ST exposes the loaded card.
5. ``BaseModel._create_model_card``: renders and writes the card exactly as ``save`` does (reused README or a
   new one), without saving the weights. Removed if ST makes it public.
6. ``BaseModel._model_card_model_id_placeholder``: the model id ST writes into a card saved before the model has
   a Hub id, and replaces in ``model = <ModelClass>("<placeholder>"`` when pushing. The oblique card's snippet uses
   that exact line so that ST's own replacement fills in the id.

Behaviours relied on (no attribute is touched, but the canary tests pin them):

7. ST's trainer demands ``router_mapping`` only when a child of the model is *exactly* ``Router``
   (``BaseTrainer.get_data_collator``). :class:`~st_oblique.modules.ModalityRouter` routes each column by the
   modality of its values, so it needs none. If ST switches to ``isinstance``, dual encoders need
   ``router_mapping={"image": "image", "caption": "text"}`` (the canary says so).
8. transformers' ``Trainer.get_decay_parameter_names`` leaves parameters whose name contains ``bias`` out of weight
   decay (its docstring says so); Sentence Transformers' trainer and ``model.fit`` build their optimizer groups with
   it. The model's temperature (``ObliquePooling.temperature``: ``log_scale_bias``, ``logit_bias``) is named
   accordingly, so plain trainers never decay a learned scale; :class:`~st_oblique.ObliqueTrainer` excludes it by
   identity instead (its ``get_decay_parameter_names``), which needs no name.

Hooks (mteb 2.26; mteb is imported inside these functions only, so that importing st-oblique stays fast):

9. ``mteb.models.model_implementations.MODEL_REGISTRY``: the dict ``mteb.get_model`` / ``get_model_meta`` look
   names up in. :func:`register_mteb_model_meta` adds an entry (never replaces a class attribute). Removed if mteb
   gets a public ``register_model``.
10. ``mteb.get_tasks._TASKS_REGISTRY``: the name -> task class dict behind ``mteb.get_task(s)(tasks=[...])``, which
    mteb's CLI uses. :func:`register_mteb_task` adds st-oblique's offline tasks so that ``mteb run -t LocalSciFact``
    finds them. Removed if mteb gets a public task registration.
11. ``mteb.cli.build_cli.build_cli``: mteb's command-line parser (``mteb.cli.main`` reads ``sys.argv``), so that
    ``st-oblique mteb`` runs mteb's CLI in-process on its own argument list.

Hook (clip-benchmark 1.6.2, the optional reference implementation; imported inside the function only):

12. ``clip_benchmark.metrics.zeroshot_classification.accuracy``: computes ``float(array of shape (1,))``, a
    TypeError on NumPy >= 2.4, and ``evaluate`` calls it by its module-global name (no argument takes another).
    :func:`clip_benchmark_numpy2_fix` puts the same computation with ``.item()`` in its place for the duration of a
    ``with`` block only, so that the parity tests and ``python -m evaluation.speed`` run CLIP_benchmark's own code
    as the reference. Removed when clip-benchmark fixes ``accuracy`` (the canary says when it works unpatched).

Worked around (OpenVINO 2025.3–2026.4; no attribute is touched, the canary pins the behaviour):

13. OpenVINO's CPU plugin gives the calling thread its own alternate signal stack (``sigaltstack``) when it
    compiles or runs a graph, and each compiled graph puts back, when freed, the stack it found. Graphs freed in
    another order than they were made (an exported model's text and image graphs, the checks of ``st_oblique.export``)
    leave the thread on a stack that is already unmapped, and the next signal handled there (Python installs its
    handlers with ``SA_ONSTACK``; e.g. ``SIGCHLD`` when a DataLoader worker exits) kills the process with SIGSEGV.
    :func:`kept_signal_stack` keeps the thread's own stack across every OpenVINO call st-oblique makes (compiling,
    running, freeing, NNCF's quantization). Removed when OpenVINO leaves the thread's signal stack alone (the canary,
    in ``tests/export/test_signal_stack.py`` because it needs OpenVINO, says when).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from sentence_transformers import SentenceTransformer
from torch import nn

__all__ = [
    "SentenceTransformerHooks",
    "clip_benchmark_numpy2_fix",
    "kept_signal_stack",
    "loaded_model_card",
    "model_id_placeholder",
    "mteb_registered_model_meta",
    "register_mteb_model_meta",
    "register_mteb_task",
    "run_mteb_cli",
    "set_loaded_model_card",
    "similarity_fn_name_if_set",
    "write_model_card_file",
]


class SentenceTransformerHooks(SentenceTransformer):
    """``SentenceTransformer`` with hooks 1 and 2 exposed under public names for its subclasses.

    Subclasses set:

    - ``trusted_module_classes``: ``modules.json`` types resolved without ``trust_remote_code`` (hook 1);
    - ``model_requirements``: ``{package: {"specifier": ">=x", "reason": "..."}}`` written into the model's config
      and checked by ST when the model is loaded (hook 2).
    """

    trusted_module_classes: ClassVar[Mapping[str, type]] = {}
    model_requirements: ClassVar[dict[str, dict[str, str]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._module_classes = cls.trusted_module_classes  # hook 1

    def _get_model_config(self) -> dict[str, Any]:  # hook 2
        config = super()._get_model_config()
        if self.model_requirements:
            config["requirements"] = {**(config.get("requirements") or {}), **self.model_requirements}
        return config


def similarity_fn_name_if_set(model: nn.Module) -> str | None:
    """The similarity function chosen for ``model`` (by the user or its saved config), None when none was (hook 3).

    Models without the attribute (not a SentenceTransformer) count as scoring with ``"dot"``.
    """
    return getattr(model, "_similarity_fn_name", "dot")


def loaded_model_card(model: SentenceTransformer) -> str | None:
    """The README ``model`` was loaded with, which its next ``save`` reuses (hook 4)."""
    return getattr(model, "_model_card_text", None)


def set_loaded_model_card(model: SentenceTransformer, card_text: str | None) -> None:
    """Replace the README the next ``save`` reuses; None makes it generate a new one (hook 4)."""
    model._model_card_text = card_text


def write_model_card_file(model: SentenceTransformer, folder: str) -> None:
    """Write ``folder/README.md`` exactly as ``model.save(folder)`` would, without the weights (hook 5)."""
    model._create_model_card(folder)


def model_id_placeholder(model: SentenceTransformer | None) -> str:
    """The model id ST writes into a card saved before the model has one, and replaces when pushing (hook 6)."""
    return getattr(model, "_model_card_model_id_placeholder", None) or getattr(
        SentenceTransformer, "_model_card_model_id_placeholder", "sentence_transformers_model_id"
    )


def mteb_registered_model_meta(name: str) -> Any:
    """The ``mteb.ModelMeta`` registered under ``name`` in mteb's model registry, or None (hook 9)."""
    from mteb.models.model_implementations import MODEL_REGISTRY  # mteb is slow to import: only when used

    return MODEL_REGISTRY.get(name)


def register_mteb_model_meta(meta: Any) -> None:
    """Add (or replace) ``meta`` in mteb's model registry under ``meta.name`` (hook 9)."""
    from mteb.models.model_implementations import MODEL_REGISTRY  # mteb is slow to import: only when used

    MODEL_REGISTRY[meta.name] = meta


def register_mteb_task(task_class: type) -> None:
    """Make ``mteb.get_task(task_class.metadata.name)`` (and so ``mteb run -t NAME``) build ``task_class()`` (hook 10).

    Raises:
        ValueError: another task class already has that name.
    """
    # mteb is slow to import: only when used. ``mteb.get_tasks`` is also a function, so the module is imported by name.
    registry = importlib.import_module("mteb.get_tasks")._TASKS_REGISTRY

    name = task_class.metadata.name
    existing = registry.get(name)
    if existing is not None and existing is not task_class:
        raise ValueError(f"mteb already has a task named {name!r} ({existing.__module__}.{existing.__qualname__}).")
    registry[name] = task_class


def run_mteb_cli(argv: list[str]) -> None:
    """Run mteb's command line (``mteb run ...``, ``mteb available-tasks ...``) in this process on ``argv`` (hook 11).

    Raises:
        SystemExit: argparse's exit for ``--help`` or a usage error (mteb's own message is printed first).
    """
    from mteb.cli.build_cli import build_cli  # mteb is slow to import: only when used

    args = build_cli().parse_args(argv)
    if not hasattr(args, "func"):
        build_cli().print_help()
        raise SystemExit(2)
    args.func(args)


@contextmanager
def clip_benchmark_numpy2_fix() -> Iterator[None]:
    """Make ``clip_benchmark.metrics.zeroshot_classification.accuracy`` work with NumPy 2 while in the block (hook 12).

    clip-benchmark 1.6.2 computes ``float(array_of_shape_1)``, a TypeError on NumPy >= 2.4; the replacement is the
    same computation with ``.item()``, and the original is back when the block ends. Needs ``pip install
    clip-benchmark``.
    """
    from clip_benchmark.metrics import zeroshot_classification as clip_benchmark_classification

    def accuracy(output, target, topk: tuple[int, ...] = (1,)) -> list[float]:
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).item()) / len(target) for k in topk]

    original = clip_benchmark_classification.accuracy
    clip_benchmark_classification.accuracy = accuracy
    try:
        yield
    finally:
        clip_benchmark_classification.accuracy = original


class _SignalStack(ctypes.Structure):
    """C's ``stack_t`` (``<signal.h>`` on Linux)."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, once (its ``sigaltstack`` is called around every OpenVINO inference); None off Linux."""
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _signal_stack() -> _SignalStack | None:
    """The calling thread's alternate signal stack; None off Linux."""
    libc = _libc()
    if libc is None:
        return None
    stack = _SignalStack()
    libc.sigaltstack(None, ctypes.byref(stack))
    return stack


def current_signal_stack() -> tuple[int, int, int] | None:
    """The calling thread's alternate signal stack as ``(address, flags, size)``; None off Linux."""
    stack = _signal_stack()
    return None if stack is None else (stack.ss_sp or 0, stack.ss_flags, stack.ss_size)


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Give the calling thread back the alternate signal stack it had before the block (hook 13).

    Wrap every call into OpenVINO (compiling, running, freeing a compiled graph, NNCF's quantization): its CPU plugin
    switches the thread to stacks of its own and, when graphs are freed out of order, leaves it on unmapped memory,
    so that the next signal crashes the process. A no-op off Linux.
    """
    saved = _signal_stack()
    try:
        yield
    finally:
        if saved is not None:
            _libc().sigaltstack(ctypes.byref(saved), None)
