"""Data shared by training and evaluation: the image loader (:mod:`~st_oblique.data.images`), dataset readers and
the registry of named datasets (:mod:`~st_oblique.data.datasets`), zero-shot templates and class names
(:mod:`~st_oblique.data.templates`) and the checks of training datasets
(:mod:`~st_oblique.data.training_data_checks`)."""
