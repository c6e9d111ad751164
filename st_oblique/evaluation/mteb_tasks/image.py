"""Offline MTEB image tasks built from st-oblique's evaluation datasets: zero-shot classification and
text->image / image->text retrieval.

:class:`LocalImageZeroShot` and :class:`LocalImageTextRetrieval` turn any dataset of
:func:`st_oblique.data.datasets.load_dataset` into an mteb task; the named tasks below use the local
Imagenette and Flickr8k copies. Zero-shot candidates follow mteb's convention (one prompt per class,
``"a photo of a {name}."``, no template ensemble); for CLIP_benchmark's protocol use
:func:`st_oblique.evaluation.classification`.

Example::

    import mteb
    from st_oblique.evaluation import mteb_model
    from st_oblique.evaluation.mteb_tasks import LocalFlickr8kT2IRetrieval, LocalImagenetteZeroShot

    tasks = [LocalImagenetteZeroShot(data_root="../shared/data", max_samples=500),
             LocalFlickr8kT2IRetrieval(data_root="../shared/data")]
    results = mteb.evaluate(mteb_model(model, name="my-org/oblique-clip"), tasks, cache=None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from mteb.abstasks import AbsTaskRetrieval
from mteb.abstasks.zeroshot_classification import AbsTaskZeroShotClassification
from mteb.tasks.retrieval.eng.flickr30k_i2t_retrieval import Flickr30kI2TRetrieval
from mteb.tasks.retrieval.eng.flickr30k_t2i_retrieval import Flickr30kT2IRetrieval
from mteb.tasks.zeroshot_classification.eng.imagenet1k import Imagenet1kZeroShotClassification
from PIL import Image as PILImage

from st_oblique.data.datasets.base import ClassificationDataset, RetrievalDataset
from st_oblique.data.datasets.registry import DATASETS, load_dataset
from st_oblique.evaluation.mteb_tasks.base import LocalTaskMixin, local_metadata

__all__ = [
    "LocalFlickr8kI2TRetrieval",
    "LocalFlickr8kT2IRetrieval",
    "LocalImageTextRetrieval",
    "LocalImageZeroShot",
    "LocalImagenetteZeroShot",
    "image_feature_value",
]

FLICKR8K_CITATION = r"""
@article{hodosh2013framing,
  author = {Hodosh, Micah and Young, Peter and Hockenmaier, Julia},
  journal = {Journal of Artificial Intelligence Research},
  pages = {853--899},
  title = {Framing Image Description as a Ranking Task: Data, Models and Evaluation Metrics},
  volume = {47},
  year = {2013},
}
"""


def image_feature_value(item: Any) -> Any:
    """An image item of an evaluation dataset in a form ``datasets.Image`` stores (bytes, path or PIL image)."""
    if isinstance(item, (bytes, bytearray)):
        return {"bytes": bytes(item), "path": None}
    if isinstance(item, (str, Path)):
        return {"bytes": None, "path": str(item)}
    if isinstance(item, np.ndarray):
        return PILImage.fromarray(item)
    return item


class _RegistryDataMixin(LocalTaskMixin):
    """Reads the task's data with :func:`~st_oblique.data.datasets.load_dataset` (``dataset_name``)."""

    dataset_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "dataset_name" in cls.__dict__:
            cls.default_path = DATASETS[cls.dataset_name].default_path

    def _load(self, path: Path) -> ClassificationDataset | RetrievalDataset:
        return load_dataset(self.dataset_name, path=path, max_samples=self.max_samples, seed=self.seed)


class LocalImageZeroShot(_RegistryDataMixin, AbsTaskZeroShotClassification):
    """Zero-shot classification on a labelled-image dataset of the registry (set ``dataset_name`` and ``metadata``).

    ``max_samples``: images.
    """

    input_column_name = "image"
    label_column_name = "label"
    candidate_template = "a photo of a {}."

    def _read_files(self, path: Path) -> DatasetDict:
        data = self._load(path)
        features = Features({"image": Image(), "label": ClassLabel(names=list(data.classnames))})
        columns = {"image": [image_feature_value(data.images[i]) for i in range(len(data))], "label": data.labels}
        return DatasetDict({"test": Dataset.from_dict(columns, features=features)})

    def get_candidate_labels(self) -> list[str]:
        """One prompt per class, in label order."""
        names = self.dataset["test"].features[self.label_column_name].names
        return [self.candidate_template.format(name) for name in names]


class LocalImageTextRetrieval(_RegistryDataMixin, AbsTaskRetrieval):
    """Text->image (``category="t2i"``) or image->text (``"i2t"``) retrieval on a captioned-image dataset.

    Every caption is a query whose one relevant document is its image (t2i); every image is a query whose relevant
    documents are its captions (i2t). ``max_samples``: images (with all their captions).
    """

    def _read_files(self, path: Path) -> dict:
        data = self._load(path)
        image_ids = [f"image-{index}" for index in range(len(data))]
        caption_ids = [[f"caption-{index}-{k}" for k in range(len(group))] for index, group in enumerate(data.captions)]
        images = Dataset.from_dict(
            {"id": image_ids, "image": [image_feature_value(data.images[i]) for i in range(len(data))]},
            features=Features({"id": Value("string"), "image": Image()}),
        )
        captions = Dataset.from_dict(
            {
                "id": [cid for group in caption_ids for cid in group],
                "text": [caption for group in data.captions for caption in group],
            }
        )
        if self.metadata.category == "t2i":
            relevant = {cid: {iid: 1} for iid, group in zip(image_ids, caption_ids, strict=True) for cid in group}
            split = {"corpus": images, "queries": captions}
        else:
            relevant = {iid: dict.fromkeys(group, 1) for iid, group in zip(image_ids, caption_ids, strict=True)}
            split = {"corpus": captions, "queries": images}
        return {"default": {"test": {**split, "relevant_docs": relevant, "top_ranked": None}}}


class LocalImagenetteZeroShot(LocalImageZeroShot):
    """Zero-shot classification on the Imagenette validation set (3925 ImageNet photos, 10 classes)."""

    dataset_name = "imagenette"
    metadata = local_metadata(
        Imagenet1kZeroShotClassification.metadata,
        "LocalImagenetteZeroShot",
        description="Imagenette: 10 easily told apart ImageNet classes (validation set, 3925 images), read from a "
        "local tar archive or folder.",
        reference="https://github.com/fastai/imagenette",
    )


class LocalFlickr8kT2IRetrieval(LocalImageTextRetrieval):
    """Text->image retrieval on Flickr8k (1000 images, 5 captions each)."""

    dataset_name = "flickr8k_1k"
    metadata = local_metadata(
        Flickr30kT2IRetrieval.metadata,
        "LocalFlickr8kT2IRetrieval",
        description="Retrieve Flickr8k images from their captions (1000 images, 5 captions each), read locally.",
        reference="https://doi.org/10.1613/jair.3994",
        bibtex_citation=FLICKR8K_CITATION,
    )


class LocalFlickr8kI2TRetrieval(LocalImageTextRetrieval):
    """Image->text retrieval on Flickr8k (1000 images, 5 captions each)."""

    dataset_name = "flickr8k_1k"
    metadata = local_metadata(
        Flickr30kI2TRetrieval.metadata,
        "LocalFlickr8kI2TRetrieval",
        description="Retrieve the captions of Flickr8k images (1000 images, 5 captions each), read locally.",
        reference="https://doi.org/10.1613/jair.3994",
        bibtex_citation=FLICKR8K_CITATION,
    )
