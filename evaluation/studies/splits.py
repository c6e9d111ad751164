"""Data splits and caption noise of the topology study.

- :func:`split_by_image`: train / validation / test image indices (never one image in two splits);
- :func:`noisy_caption_table`: a fraction of the (image, caption) training pairs gets the caption of another
  image, deterministically from a seed (the paper's "noisy web captions", made controllable);
- :func:`flickr_text_pairs` / :func:`msrp_paraphrase_pairs`: the text pairs of regime B.

Example::

    splits = split_by_image(1000, {"train": 700, "val": 100, "test": 200}, seed=0)
    table = noisy_caption_table(captions, splits["train"], fraction=0.3, seed=1234)
    table.caption_ids[i]        # caption ids of image i (5 per Flickr image), some swapped in when noisy
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def split_by_image(num_images: int, sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint random image index sets, e.g. ``{"train": 700, "val": 100, "test": 200}``.

    Splitting by image (never by caption) keeps the captions of a test image out of training.

    Raises:
        ValueError: the sizes ask for more images than there are, or a size is negative.
    """
    if any(size < 0 for size in sizes.values()):
        raise ValueError(f"Split sizes must be non-negative, got {dict(sizes)}.")
    if sum(sizes.values()) > num_images:
        raise ValueError(f"The splits {dict(sizes)} need {sum(sizes.values())} images, but there are {num_images}.")
    order = np.random.default_rng(seed).permutation(num_images)
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = np.sort(order[start : start + size])
        start += size
    return splits


@dataclass
class CaptionTable:
    """The captions each training image is paired with.

    Attributes:
        caption_ids: ``{image index: [caption id, ...]}``; a caption id indexes the flat caption list.
        noisy: ``{image index: [bool, ...]}``, True where the caption comes from another image.
    """

    caption_ids: dict[int, list[int]]
    noisy: dict[int, list[bool]]

    @property
    def noise_fraction(self) -> float:
        flags = [flag for flags in self.noisy.values() for flag in flags]
        return float(np.mean(flags)) if flags else 0.0


def caption_owners(captions: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """The flat caption list and, for each caption id, the index of the image it describes."""
    texts = [caption for group in captions for caption in group]
    owners = np.array([image for image, group in enumerate(captions) for _ in group], dtype=np.int64)
    return texts, owners


def noisy_caption_table(
    captions: Sequence[Sequence[str]], images: Sequence[int], fraction: float, seed: int
) -> CaptionTable:
    """Pair every image of ``images`` with its captions, ``fraction`` of the pairs swapped between images.

    Exactly ``round(fraction * P)`` of the P (image, caption) pairs are chosen at random; their captions are
    redistributed among them so that no chosen pair keeps a caption of its own image, nor a caption whose text
    equals one of its own image's captions (Flickr has a few duplicate captions across images). The swap stays
    inside ``images`` (the training split), so no validation or test caption leaks into training. Same inputs,
    same table.

    Raises:
        ValueError: ``fraction`` outside [0, 1), or noise that cannot be placed (e.g. every pair from one image).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"The caption noise fraction must be in [0, 1), got {fraction}.")
    texts, owners = caption_owners(captions)
    offsets = np.concatenate([[0], np.cumsum([len(group) for group in captions])])
    pairs = [
        (int(image), int(caption_id)) for image in images for caption_id in range(offsets[image], offsets[image + 1])
    ]
    rng = np.random.default_rng(seed)
    num_noisy = round(fraction * len(pairs))
    chosen = rng.choice(len(pairs), size=num_noisy, replace=False) if num_noisy else np.array([], dtype=np.int64)
    new_caption = {index: pairs[index][1] for index in range(len(pairs))}
    if num_noisy:
        assignment = _swap_between_images(chosen, pairs, rng)
        for target, source in zip(chosen, assignment, strict=True):
            new_caption[int(target)] = pairs[int(source)][1]
        _repair_text_collisions(chosen, new_caption, pairs, owners, offsets, texts, rng)
    table = CaptionTable({int(image): [] for image in images}, {int(image): [] for image in images})
    for index, (image, caption_id) in enumerate(pairs):
        table.caption_ids[image].append(new_caption[index])
        table.noisy[image].append(new_caption[index] != caption_id)
    return table


def _swap_between_images(chosen: np.ndarray, pairs: list[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``chosen`` in which no pair receives a caption from its own image.

    The chosen pairs are grouped by image (groups in random order) and every pair takes the caption of the pair
    ``m`` places further, with ``m`` the largest group: a group is contiguous and at most ``m`` long, so the
    source is always another image's pair.
    """
    by_image: dict[int, list[int]] = {}
    for index in rng.permutation(chosen):
        by_image.setdefault(pairs[int(index)][0], []).append(int(index))
    groups = [by_image[image] for image in rng.permutation(list(by_image))]
    order = np.array([index for group in groups for index in group])
    largest = max(len(group) for group in groups)
    if len(order) < 2 * largest:
        raise ValueError(
            f"Cannot swap {len(order)} captions between images when {largest} of them come from one image; "
            "use more images or less noise."
        )
    shifted = np.roll(order, -largest)
    assignment = dict(zip(order.tolist(), shifted.tolist(), strict=True))
    return np.array([assignment[int(index)] for index in chosen])


def _repair_text_collisions(
    chosen: np.ndarray,
    new_caption: dict[int, int],
    pairs: list[tuple[int, int]],
    owners: np.ndarray,
    offsets: np.ndarray,
    texts: list[str],
    rng: np.random.Generator,
) -> None:
    """Swap assignments until no noisy pair got a caption whose text is one of its own image's captions."""

    def clashes(index: int, caption_id: int) -> bool:
        image = pairs[index][0]
        own = {texts[own_id].strip().lower() for own_id in range(offsets[image], offsets[image + 1])}
        return owners[caption_id] == image or texts[caption_id].strip().lower() in own

    chosen = [int(index) for index in chosen]
    for _ in range(100):
        bad = [index for index in chosen if clashes(index, new_caption[index])]
        if not bad:
            return
        for index in bad:
            other = int(rng.choice(chosen))
            if not clashes(index, new_caption[other]) and not clashes(other, new_caption[index]):
                new_caption[index], new_caption[other] = new_caption[other], new_caption[index]
    raise ValueError("Could not place the noisy captions without giving an image one of its own captions.")


def flickr_text_pairs(
    csv_path: str | Path, exclude_images: set[str], num_pairs: int, seed: int
) -> list[tuple[str, str]]:
    """``(caption, other caption of the same image)`` pairs from Flickr8k's caption CSV, one pair per image.

    One pair per image keeps two captions of one image out of a batch, where one would be the other's false
    negative. Images in ``exclude_images`` (file names, e.g. the image-text study's images) are left out.

    Raises:
        ValueError: fewer eligible images than ``num_pairs``.
    """
    groups: dict[str, list[str]] = {}
    with open(csv_path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["image"] not in exclude_images:
                groups.setdefault(row["image"], []).append(row["caption"].strip())
    names = sorted(name for name, group in groups.items() if len(set(group)) >= 2)
    if len(names) < num_pairs:
        raise ValueError(f"{csv_path} has {len(names)} eligible images, fewer than the {num_pairs} pairs asked for.")
    rng = np.random.default_rng(seed)
    pairs = []
    for name in rng.choice(names, size=num_pairs, replace=False):
        unique = sorted(set(groups[str(name)]))
        first, second = rng.choice(len(unique), size=2, replace=False)
        pairs.append((unique[first], unique[second]))
    return pairs


def msrp_paraphrase_pairs(tsv_path: str | Path, num_pairs: int, seed: int) -> list[tuple[str, str]]:
    """``num_pairs`` random paraphrase pairs (``Quality == 1``) of a Microsoft Research Paraphrase Corpus file.

    Raises:
        ValueError: the file has fewer paraphrase pairs than asked for.
    """
    pairs = []
    with open(tsv_path, encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["Quality"].strip() == "1":
                pairs.append((row["#1 String"].strip(), row["#2 String"].strip()))
    if len(pairs) < num_pairs:
        raise ValueError(f"{tsv_path} has {len(pairs)} paraphrase pairs, fewer than the {num_pairs} asked for.")
    rng = np.random.default_rng(seed)
    return [pairs[index] for index in rng.choice(len(pairs), size=num_pairs, replace=False)]
