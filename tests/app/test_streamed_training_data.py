"""WebDataset shards and streamed datasets for ``st-oblique train``: read shard by shard, checked before training."""

from __future__ import annotations

import io
import tarfile

import pytest
from datasets import IterableDataset
from PIL import Image

from st_oblique.app.train_config import TrainConfig
from st_oblique.app.train_data import expand_shards, load_training_data
from st_oblique.app.train_pipeline import training_arguments
from st_oblique.errors import ObliqueConfigError, TrainingDataError


def write_shards(folder, num_shards: int = 4, per_shard: int = 3, text_key: str = "txt") -> list[str]:
    """``num_shards`` tar shards in the img2dataset layout, captions ``caption <shard> <index>``."""
    paths = []
    for shard in range(num_shards):
        path = folder / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as archive:
            for index in range(per_shard):
                buffer = io.BytesIO()
                Image.new("RGB", (8, 8), (40 * index, 60 * shard, 0)).save(buffer, "JPEG")
                for extension, payload in (("jpg", buffer.getvalue()), (text_key, f"caption {shard} {index}".encode())):
                    info = tarfile.TarInfo(f"{shard:05d}{index:04d}.{extension}")
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
        paths.append(str(path))
    return paths


def test_brace_patterns_expand_like_open_clip(tmp_path):
    paths = write_shards(tmp_path)
    assert expand_shards(f"{tmp_path}/{{00000..00003}}.tar") == paths
    assert expand_shards(f"{tmp_path}/{{00000..00001}}.tar::{tmp_path}/{{00002..00003}}.tar") == paths
    with pytest.raises(TrainingDataError, match=r"1 of the 5 shards .* do not exist, e\.g\. .*00004\.tar.*inclusive"):
        expand_shards(f"{tmp_path}/{{00000..00004}}.tar")


def test_shards_stream_every_sample_once_as_image_caption_columns(tmp_path):
    write_shards(tmp_path)
    data = load_training_data(shards=f"{tmp_path}/{{00000..00003}}.tar", show_progress_bar=False)
    assert isinstance(data.dataset, IterableDataset) and data.streaming and data.num_rows is None
    assert data.columns == ["jpg", "txt"] and data.image_columns == ["jpg"] and data.num_shards == 4
    captions = [row["txt"] for row in data.dataset]
    assert sorted(captions) == sorted(f"caption {s} {i}" for s in range(4) for i in range(3))
    # accelerate's per-process split of a datasets.IterableDataset: disjoint shards, together every sample once
    halves = [[row["txt"] for row in data.dataset.shard(num_shards=2, index=rank)] for rank in range(2)]
    assert not set(halves[0]) & set(halves[1]) and sorted(halves[0] + halves[1]) == sorted(captions)
    limited = load_training_data(shards=f"{tmp_path}/{{00000..00003}}.tar", max_samples=5, show_progress_bar=False)
    assert len(list(limited.dataset)) == 5


def test_shards_without_captions_are_refused_naming_what_they_hold(tmp_path):
    write_shards(tmp_path, num_shards=1, text_key="xyz")
    with pytest.raises(TrainingDataError, match=r"have the files \['jpg', 'xyz'\].*--columns IMAGE_EXT TEXT_EXT"):
        load_training_data(shards=str(tmp_path / "00000.tar"), show_progress_bar=False)
    data = load_training_data(shards=str(tmp_path / "00000.tar"), columns=["jpg", "xyz"], show_progress_bar=False)
    assert data.columns == ["jpg", "xyz"]


def test_a_streamed_local_dataset_and_the_options_that_need_max_steps(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"anchor": ["a", "b", "c"], "positive": ["x", "y", "z"]}).save_to_disk(str(tmp_path / "pairs"))
    data = load_training_data(dataset=str(tmp_path / "pairs"), streaming=True, show_progress_bar=False)
    assert data.streaming and [row["anchor"] for row in data.dataset] == ["a", "b", "c"]
    with pytest.raises(TrainingDataError, match="--streaming applies to --dataset"):
        load_training_data(pairs=str(tmp_path / "x.tsv"), streaming=True)
    with pytest.raises(ObliqueConfigError, match=r"has no length.*--max-steps"):
        TrainConfig(backbone="text", model="m", shards="data/{0..1}.tar", output_dir=str(tmp_path / "out")).validate()


def test_streamed_runs_let_each_process_read_its_own_shards(tmp_path):
    write_shards(tmp_path)
    data = load_training_data(shards=f"{tmp_path}/{{00000..00003}}.tar", show_progress_bar=False)
    config = TrainConfig(shards="x", max_steps=2, output_dir=str(tmp_path / "out"))
    arguments = training_arguments(config, tmp_path / "checkpoints", data)
    assert arguments.accelerator_config.dispatch_batches is False
    in_memory = training_arguments(config, tmp_path / "checkpoints")
    assert in_memory.accelerator_config.dispatch_batches is None  # accelerate's default for data in memory


def test_a_truncated_jpeg_in_a_caption_tar_is_refused_before_training(tmp_path):
    """PIL's verify() passes a JPEG cut short; the caption reader decodes every image."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, "JPEG")
    whole = buffer.getvalue()
    with tarfile.open(tmp_path / "images.tar", "w") as archive:
        for name, payload in (("a.jpg", whole), ("b.jpg", whole[: len(whole) // 2])):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    (tmp_path / "captions.tsv").write_text("image\tcaption\na.jpg\ta dog\nb.jpg\ta cat\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match=r"1 of 2 images .* cannot be read, e\.g\. b\.jpg"):
        load_training_data(captions=tmp_path / "captions.tsv", images=tmp_path / "images.tar", show_progress_bar=False)
