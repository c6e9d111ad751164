"""The supported version range is the tested one: every direct dependency in pyproject.toml (the library's and those
of the extras CI installs, ``dev`` and what it includes) has a lower bound, and .ci/constraints-oldest.txt, the
oldest environment .ci/run builds and tests, pins each of them to exactly that bound."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements() -> list[Requirement]:
    """The library's dependencies and those of ``dev``, with the extras ``dev`` names of st-oblique itself."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    requirements, pending, seen = [Requirement(line) for line in project["dependencies"]], ["dev"], set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for line in extras[extra]:
            requirement = Requirement(line)
            if normalized(requirement.name) == normalized(project["name"]):
                pending += [name for name in requirement.extras if name not in seen]
            else:
                requirements.append(requirement)
    return requirements


def oldest_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "constraints-oldest.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: the oldest environment pins exact versions"
            pins[normalized(requirement.name)] = specifier.version
    return pins


def test_every_dependency_has_a_lower_bound_and_no_untested_upper_bound():
    for requirement in declared_requirements():
        operators = {specifier.operator for specifier in requirement.specifier}
        assert ">=" in operators, f"{requirement}: give it a lower bound (the oldest version CI tests)"
        assert operators <= {">=", "!="}, f"{requirement}: an upper bound only where a known release breaks it"


def test_the_oldest_environment_pins_every_dependency_to_its_lower_bound():
    pins = oldest_pins()
    bounds = {
        normalized(requirement.name): next(s.version for s in requirement.specifier if s.operator == ">=")
        for requirement in declared_requirements()
    }
    assert set(pins) == set(bounds), "constraints-oldest.txt and pyproject.toml name different packages"
    for name, bound in bounds.items():
        assert Version(pins[name]) == Version(bound), (
            f"{name}: pyproject.toml says >={bound}, constraints-oldest.txt pins =={pins[name]}"
        )
