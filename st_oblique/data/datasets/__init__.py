"""Evaluation datasets: labelled images (zero-shot classification) and captioned images (zero-shot retrieval).

Readers for class folders and tar archives of class folders, MNIST-format IDX files, caption tables,
Hugging Face datasets and CLIP_benchmark's WebDataset exports, and a registry of named datasets
(:func:`load_dataset`).
"""

from st_oblique.data.datasets.base import ClassificationDataset, RetrievalDataset
from st_oblique.data.datasets.captions import read_captions
from st_oblique.data.datasets.huggingface import from_hf_dataset, read_hf_dataset, read_wds
from st_oblique.data.datasets.idx import read_idx, read_idx_pair
from st_oblique.data.datasets.image_folder import read_image_folder, read_image_tar
from st_oblique.data.datasets.registry import (
    DATASETS,
    DatasetSpec,
    default_data_root,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "ClassificationDataset",
    "DatasetSpec",
    "RetrievalDataset",
    "default_data_root",
    "from_hf_dataset",
    "load_dataset",
    "read_captions",
    "read_hf_dataset",
    "read_idx",
    "read_idx_pair",
    "read_image_folder",
    "read_image_tar",
    "read_wds",
    "register_dataset",
]
