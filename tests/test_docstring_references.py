"""Every Sphinx cross-reference in st_oblique's docstrings (``:mod:``, ``:func:``, ``:class:``, ``:meth:``, ``:data:``,
``:attr:``, ``:exc:``, ``:obj:``) and every dotted ``st_oblique.…`` path in code font names something that exists, so
that docstrings cannot point at moved or deleted code (as ``:class:`~st_oblique.modules.image.ExtraClassTokens``` once
did)."""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import st_oblique

PACKAGE = Path(st_oblique.__file__).resolve().parent
ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|data|attr|exc|obj):`~?\.?([A-Za-z_][\w.]*)(?:\(\))?`")
LITERAL = re.compile(r"``(st_oblique(?:\.[A-Za-z_]\w*)+)")  # a dotted path in code font: ``st_oblique.x.y``
MISSING = object()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def attribute_path(root: Any, names: list[str]) -> Any:
    value = root
    for name in names:
        value = getattr(value, name, MISSING)
        if value is MISSING:
            return MISSING
    return value


def imported(target: str) -> Any:
    """``target`` as a dotted path: an importable module prefix, then attributes (the longest prefix first)."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        found = attribute_path(module, parts[end:])
        if found is not MISSING:  # else a shorter prefix: a deprecated module may shadow a class of the same name
            return found
    return MISSING


def resolve(target: str, module: Any) -> Any:
    """Where Sphinx would look: a full dotted path, the module's names, its classes' members, the package's names."""
    names = target.split(".")
    classes = [value for value in vars(module).values() if inspect.isclass(value) and value.__module__ == module.__name__]
    for root in (module, *classes, st_oblique, builtins):
        found = attribute_path(root, names)
        if found is not MISSING:
            return found
    return imported(target)


def test_every_docstring_reference_resolves():
    references = dangling = 0
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # importing it would run the command line
            continue
        module = importlib.import_module(module_name(path))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for target in (*ROLE.findall(line), *LITERAL.findall(line)):
                references += 1
                if resolve(target, module) is MISSING:
                    dangling += 1
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {target}")
    assert references > 200  # the pattern still finds the package's references
    assert not problems, f"{dangling} docstring reference(s) name nothing:\n" + "\n".join(problems)
