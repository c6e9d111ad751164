"""st-oblique's measurements that are not part of the package: studies, benchmarks and checks against references.

- :mod:`evaluation.studies`: the topology study (``python -m evaluation.studies.topology``);
- :mod:`evaluation.benchmarks`: speed and memory, as ratios against a baseline measured in the same run;
- :mod:`evaluation.speed`: the harness's zero-shot loop against CLIP_benchmark's (``python -m evaluation.speed``).

Evaluating models is ``st-oblique eval`` (the harness is :mod:`st_oblique.evaluation`). See ``evaluation/README.md``.
"""
