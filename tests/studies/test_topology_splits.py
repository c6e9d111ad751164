"""The topology study's data handling: image splits, caption noise, epoch batches, text pairs."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.studies.lit_heads import epoch_batches
from evaluation.studies.splits import (
    caption_owners,
    flickr_text_pairs,
    msrp_paraphrase_pairs,
    noisy_caption_table,
    split_by_image,
)


def flickr_like(num_images: int = 60, per_image: int = 5) -> list[list[str]]:
    """Captions like Flickr's: 5 per image, with a few texts shared by two images (as real Flickr8k has)."""
    captions = [[f"image {i} caption {j}" for j in range(per_image)] for i in range(num_images)]
    for i in range(0, num_images - 1, 10):
        captions[i][0] = captions[i + 1][0] = f"a dog runs through the grass {i}"
    return captions


def test_split_by_image_is_disjoint_complete_and_deterministic():
    splits = split_by_image(1000, {"train": 700, "val": 100, "test": 200}, seed=0)
    assert {name: len(indices) for name, indices in splits.items()} == {"train": 700, "val": 100, "test": 200}
    sets = [set(indices.tolist()) for indices in splits.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(1000))
    again = split_by_image(1000, {"train": 700, "val": 100, "test": 200}, seed=0)
    assert all(np.array_equal(splits[name], again[name]) for name in splits)
    other = split_by_image(1000, {"train": 700, "val": 100, "test": 200}, seed=1)
    assert not np.array_equal(splits["test"], other["test"])
    with pytest.raises(ValueError, match="need 1100 images"):
        split_by_image(1000, {"train": 1000, "test": 100}, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 0.15, 0.3, 0.5])
def test_noisy_captions_never_count_an_images_own_caption_as_noise(fraction):
    captions = flickr_like()
    texts, owners = caption_owners(captions)
    train = np.arange(0, 60, 2)  # the noise must stay inside these images
    table = noisy_caption_table(captions, train, fraction, seed=1234)
    pairs = [
        (image, caption_id, flag)
        for image in table.caption_ids
        for caption_id, flag in zip(table.caption_ids[image], table.noisy[image], strict=True)
    ]
    assert len(pairs) == 5 * len(train)
    assert sum(flag for *_, flag in pairs) == round(fraction * len(pairs))
    assert table.noise_fraction == pytest.approx(round(fraction * len(pairs)) / len(pairs))
    for image, caption_id, flag in pairs:
        own_texts = set(captions[image])
        if flag:
            assert owners[caption_id] != image
            assert texts[caption_id] not in own_texts  # also not a duplicate of one of its own captions' text
            assert owners[caption_id] in set(train.tolist())
        else:
            assert owners[caption_id] == image
    # Every caption of the split is still used exactly once (captions are swapped, not duplicated).
    used = sorted(caption_id for _, caption_id, _ in pairs)
    assert used == sorted(c for image in train for c in range(5 * image, 5 * image + 5))


def test_noisy_captions_are_deterministic_per_seed():
    captions = flickr_like()
    train = np.arange(40)
    first = noisy_caption_table(captions, train, 0.3, seed=7)
    assert first.caption_ids == noisy_caption_table(captions, train, 0.3, seed=7).caption_ids
    assert first.caption_ids != noisy_caption_table(captions, train, 0.3, seed=8).caption_ids
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        noisy_caption_table(captions, train, 1.0, seed=0)


def test_epoch_batches_depend_only_on_the_seed_and_use_each_image_once():
    captions = flickr_like()
    train = np.arange(48)
    table = noisy_caption_table(captions, train, 0.3, seed=0)
    batches = epoch_batches(train, table, batch_size=16, seed=3, epoch=2)
    again = epoch_batches(train, table, batch_size=16, seed=3, epoch=2)
    assert len(batches) == 3
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    images = np.concatenate([image_ids for image_ids, _ in batches])
    assert sorted(images.tolist()) == train.tolist()
    for image_ids, caption_ids in batches:
        for image, caption in zip(image_ids, caption_ids, strict=True):
            assert caption in table.caption_ids[int(image)]
    other = epoch_batches(train, table, batch_size=16, seed=4, epoch=2)
    assert not np.array_equal(other[0][0], batches[0][0])


def test_text_pairs_leave_out_the_study_images_and_keep_only_paraphrases(tmp_path):
    csv_path = tmp_path / "captions.csv"
    rows = ["image,caption"] + [f"img{i}.jpg,caption {j} of image {i}" for i in range(10) for j in range(5)]
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    excluded = {f"img{i}.jpg" for i in range(5)}
    pairs = flickr_text_pairs(csv_path, excluded, num_pairs=5, seed=0)
    images = {first.rsplit(" ", 1)[-1] for first, _ in pairs} | {second.rsplit(" ", 1)[-1] for _, second in pairs}
    assert images == {"5", "6", "7", "8", "9"}  # one pair per remaining image, none of the excluded ones
    assert all(first != second and first.rsplit(" ", 1)[-1] == second.rsplit(" ", 1)[-1] for first, second in pairs)
    with pytest.raises(ValueError, match="eligible images"):
        flickr_text_pairs(csv_path, excluded, num_pairs=6, seed=0)

    tsv_path = tmp_path / "msr.tsv"
    lines = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    lines += [f'{i % 2}\t{i}\t{i + 100}\tsentence {i} "quoted"\tparaphrase {i}' for i in range(10)]
    tsv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paraphrases = msrp_paraphrase_pairs(tsv_path, num_pairs=5, seed=0)
    assert sorted(int(a.split()[1]) for a, _ in paraphrases) == [1, 3, 5, 7, 9]
    assert paraphrases[0][0].endswith('"quoted"')

