"""The public names of ``st_oblique.evaluation`` resolve (lazily) to the functions the issue names."""

from __future__ import annotations

import st_oblique
import st_oblique.evaluation as evaluation
from st_oblique.evaluation.classification import zeroshot_classification
from st_oblique.evaluation.mteb_wrapper import mteb_model
from st_oblique.evaluation.retrieval import zeroshot_retrieval


def test_public_names_resolve():
    assert set(evaluation.__all__) == set(evaluation._PUBLIC) and sorted(dir(evaluation)) == sorted(evaluation.__all__)
    for name in evaluation.__all__:
        value = getattr(evaluation, name)
        assert name in {"DATASETS", "DEFAULT_TEMPLATES"} or value.__module__.startswith(evaluation._PUBLIC[name])
    assert evaluation.zeroshot_classification is zeroshot_classification
    assert evaluation.zeroshot_retrieval is zeroshot_retrieval and evaluation.mteb_model is mteb_model
    assert st_oblique.evaluation is evaluation
