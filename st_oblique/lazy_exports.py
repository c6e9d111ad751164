"""Lazy public names for a package (PEP 562): ``import st_oblique`` stays fast, names import on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, public: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, importing each public name on first use.

    Args:
        package: the package's ``__name__``.
        public: ``{name: module}``; the name is an attribute of the module, or the module itself when the module's
            path ends in ``.name`` (a submodule such as ``st_oblique.manifold``).
        namespace: the package's ``globals()``; an imported name is cached there, so ``__getattr__`` runs once.

    Example::

        _PUBLIC = {"ObliquePooling": "st_oblique.modules.pooling"}
        __all__ = list(_PUBLIC)
        __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 (the name PEP 562 asks for)
        module_name = public.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_name)
        value = module if module_name.endswith("." + name) else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace.get("__all__", ()), *public})

    return __getattr__, __dir__
