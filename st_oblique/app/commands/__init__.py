"""The subcommands of ``st-oblique``: one module per command.

Each module defines ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` (every option of a command can also
come from ``--config FILE``, see :mod:`st_oblique.app.options`) and ``run(args)``, which does the work through the
library or the app's pipelines and prints the result. :mod:`st_oblique.app.cli` builds the parser from
:data:`COMMAND_MODULES`; a new command is a new module and one line here.
"""

from __future__ import annotations

COMMAND_MODULES: tuple[str, ...] = (
    "st_oblique.app.commands.demo",
    "st_oblique.app.commands.train",
    "st_oblique.app.commands.evaluate",
    "st_oblique.app.commands.compare",
    "st_oblique.app.commands.list_datasets",
    "st_oblique.app.commands.push",
    "st_oblique.app.commands.info",
    "st_oblique.app.commands.explain",
    "st_oblique.app.commands.app",
    "st_oblique.app.commands.convert",
    "st_oblique.app.commands.export",
    "st_oblique.app.commands.mteb",
)
"""The command modules, in the order ``st-oblique --help`` lists them."""
