"""``st-oblique train --shards`` in a 2-process run (``accelerate launch``, gloo on CPU): each process reads its own
WebDataset shards, and together they train on every sample exactly once per epoch, none twice.

What each process trained on comes from ``--record-samples FILE`` (the text of every row its data collator
collated, in ``FILE.rank0`` and ``FILE.rank1``), so the test checks what the trainer consumed, not a re-derivation
of accelerate's split."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from cli.test_cli_distributed import launch_two_processes
from PIL import Image
from tiny_models import TINY_OPEN_CLIP_CONFIG

pytestmark = pytest.mark.distributed

NUM_SHARDS = 4


def write_shards(folder: Path, samples: list[tuple[bytes, str]]) -> str:
    """``samples`` as ``NUM_SHARDS`` equal img2dataset-layout shards (``{key}.jpg`` + ``{key}.txt``); their pattern."""
    folder.mkdir()
    per_shard = len(samples) // NUM_SHARDS
    for shard in range(NUM_SHARDS):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for index in range(shard * per_shard, (shard + 1) * per_shard):
                image, caption = samples[index]
                for extension, payload in (("jpg", image), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{index:09d}.{extension}")
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
    return f"{folder}/{{00000..{NUM_SHARDS - 1:05d}}}.tar"


def flickr8k_samples(shared_data: Path, count: int) -> list[tuple[bytes, str]]:
    """The first ``count`` (image, caption) pairs of Flickr8k-1k (5 captions per image)."""
    with open(shared_data / "flickr8k_1k" / "captions.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:count]
    with tarfile.open(shared_data / "flickr8k_1k" / "flickr8k_1k_images_256.tar") as archive:
        members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
        images = {name: archive.extractfile(members[name]).read() for name in {row["image"] for row in rows}}
    return [(images[row["image"]], row["caption"]) for row in rows]


def synthetic_samples(count: int) -> list[tuple[bytes, str]]:
    samples = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (index * 7 % 256, index * 13 % 256, 90)).save(buffer, "JPEG")
        samples.append((buffer.getvalue(), f"sample number {index}"))
    return samples


def train_two_processes(tmp_path: Path, pattern: str, *, batch_size: int, max_steps: int) -> tuple[Path, list[list[str]]]:
    config = tmp_path / "tiny-open-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    output, record = tmp_path / "runs" / "sharded", tmp_path / "samples" / "trained.txt"
    # launch_two_processes also checks that the processes end with bit-identical parameters
    _, _, stderr = launch_two_processes(
        ["--backbone", "open_clip", "--open-clip-config", config, "--num-tokens", 2, "--token-dim", 8,
         "--shards", pattern, "--batch-size", batch_size, "--max-steps", max_steps, "--gather-across-devices",
         "--record-samples", record],
        output, tmp_path,
    )
    assert "shard(s) for 2 processes" not in stderr  # the warning of a run with fewer shards than processes
    per_rank = [Path(f"{record}.rank{rank}").read_text(encoding="utf-8").splitlines() for rank in range(2)]
    return output, per_rank


def check_once_per_epoch(per_rank: list[list[str]], captions: list[str], epochs: int) -> None:
    per_epoch = len(captions) // 2  # rows one process reads in one epoch (2 of the 4 shards)
    assert [len(rows) for rows in per_rank] == [epochs * per_epoch] * 2
    for epoch in range(epochs):
        seen = [rows[epoch * per_epoch:(epoch + 1) * per_epoch] for rows in per_rank]
        # every sample once in the epoch: the two processes' rows together are the data set, as a multiset
        assert Counter(seen[0]) + Counter(seen[1]) == Counter(captions), f"epoch {epoch}"
        # each process read whole shards of its own (captions of one shard never reach both)
        assert not set(seen[0]) & set(seen[1]) - {caption for caption, n in Counter(captions).items() if n > 1}


def test_two_processes_train_on_every_synthetic_shard_sample_once_per_epoch(tmp_path):
    samples = synthetic_samples(32)  # 4 shards of 8; 2 per process; batch 4: 4 steps per epoch
    pattern = write_shards(tmp_path / "shards", samples)
    output, per_rank = train_two_processes(tmp_path, pattern, batch_size=4, max_steps=8)  # two epochs
    check_once_per_epoch(per_rank, [caption for _, caption in samples], epochs=2)
    report = json.loads((output / "training_report.json").read_text())
    assert report["training"]["processes"] == 2 and report["training"]["steps"] == 8


@pytest.mark.shared
def test_two_processes_train_on_every_flickr8k_shard_sample_once(tmp_path, shared):
    samples = flickr8k_samples(shared / "data", 400)  # 80 photos x 5 captions, 4 shards of 100
    pattern = write_shards(tmp_path / "shards", samples)
    _, per_rank = train_two_processes(tmp_path, pattern, batch_size=25, max_steps=8)  # one epoch: 200 rows each
    check_once_per_epoch(per_rank, [caption for _, caption in samples], epochs=1)
