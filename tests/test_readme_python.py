"""Every ```python block of the README stands on its own: it compiles and imports or defines every name it uses, so
it can be copied into a fresh interpreter. tests/cli/test_readme.py runs them all, in order with the shell commands
(:mod:`readme_blocks` says how); a block another README section adds is covered by both without changing them."""

from __future__ import annotations

import builtins
import symtable

import pytest
from readme_blocks import MARKER, PYTHON, readme_blocks

PYTHON_BLOCKS = [block for block in readme_blocks() if block.language == PYTHON]


def undefined_names(code: str) -> set[str]:
    """Global names ``code`` reads but never imports, assigns or defines (builtins excluded)."""
    top = symtable.symtable(code, "<README>", "exec")
    defined = {symbol.get_name() for symbol in top.get_symbols() if symbol.is_assigned() or symbol.is_imported()}
    used: set[str] = set()

    def visit(table: symtable.SymbolTable, is_top: bool) -> None:
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (is_top or symbol.is_global()):
                used.add(symbol.get_name())
        for child in table.get_children():
            visit(child, False)

    visit(top, True)
    return used - defined - set(dir(builtins))


def test_the_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 5  # the quickstart, training, evaluation, fewer tokens, serving (and any added)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.where for block in PYTHON_BLOCKS])
def test_each_python_block_is_standalone(block):
    compile(block.code, f"<{block.where}>", "exec")
    missing = undefined_names(block.code)
    assert not missing, f"{block.where} uses {sorted(missing)} without importing or defining them"
    if block.not_run is not None:
        assert len(block.not_run.split()) >= 3, f"{block.where}: say why the tests do not run it"


def test_the_standalone_check_can_fail():
    assert undefined_names("import st_oblique\nmodel = st_oblique.load(path)\nprint([documents for _ in model])\n") == {
        "path", "documents"}
    assert undefined_names("import os\nx = os.environ.get('MODEL')\nf = lambda y: y + x\nprint(f(1))\n") == set()
    assert MARKER.match("# online: needs the Hub").group(2) == "needs the Hub"
