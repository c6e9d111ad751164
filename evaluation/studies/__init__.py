"""Studies that answer users' questions with numbers anyone can rerun.

- :mod:`evaluation.studies.topology`: does the oblique manifold beat the sphere? (``python -m
  evaluation.studies.topology --config evaluation/studies/topology.yaml``; results in
  ``evaluation/results/topology/``).
"""
