"""The ``st-oblique`` application: the command line and the pipelines behind it.

Everything here is built on the library (:mod:`st_oblique`) and nothing in the library imports it:

- :mod:`~st_oblique.app.cli`: the ``st-oblique`` command (one parser, one ``--config`` mechanism);
- :mod:`~st_oblique.app.options`: options from the command line and YAML/JSON config files;
- :mod:`~st_oblique.app.train_config`, :mod:`~st_oblique.app.train_data`, :mod:`~st_oblique.app.train_pipeline`,
  :mod:`~st_oblique.app.train_report`: ``st-oblique train``;
- :mod:`~st_oblique.output_folder`: output folders written completely or not at all;
- :mod:`~st_oblique.app.demo`: ``st-oblique demo``;
- :mod:`~st_oblique.app.search_app`: ``st-oblique app``, the search page (gradio, the ``app`` extra).

Example::

    from st_oblique.app import TrainConfig, train

    config = TrainConfig(backbone="text", model="sentence-transformers/all-MiniLM-L6-v2",
                         pairs="pairs.tsv", output_dir="runs/oblique-minilm")
    result = train(config)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_oblique.lazy_exports import lazy_exports

_PUBLIC: dict[str, str] = {
    "TrainConfig": "st_oblique.app.train_config",
    "train": "st_oblique.app.train_pipeline",
    "run_demo": "st_oblique.app.demo",
    "main": "st_oblique.app.cli",
}

__all__ = ["TrainConfig", "main", "run_demo", "train"]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


if TYPE_CHECKING:
    from st_oblique.app.cli import main
    from st_oblique.app.demo import run_demo
    from st_oblique.app.train_config import TrainConfig
    from st_oblique.app.train_pipeline import train
