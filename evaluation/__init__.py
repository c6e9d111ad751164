"""st-oblique's evaluation harness: ``python -m evaluation --help`` from the repository root.

The harness is a thin layer over :mod:`st_oblique.evaluation` (zero-shot classification and retrieval with
CLIP_benchmark's protocol, MTEB online and offline) plus checks against CLIP_benchmark itself
(:mod:`evaluation.speed`). See ``evaluation/README.md``.
"""
