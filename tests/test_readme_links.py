"""Every relative link and image of the README and of the result READMEs points to a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "evaluation" / "README.md",
    *REPO_ROOT.glob("evaluation/results/**/README.md"),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_relative_links_resolve(document):
    text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.S)
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#|mailto:", t)]
    missing = [t for t in targets if not (document.parent / t.split("#")[0]).exists()]
    assert not missing, f"{document.relative_to(REPO_ROOT)} links to missing files: {missing}"
