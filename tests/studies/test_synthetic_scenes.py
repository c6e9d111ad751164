"""The synthetic scenes of regime C: deterministic per seed, held-out compositions kept out of training, unseen
prompt templates, and caption noise that never leaves a caption with its own image."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from evaluation.studies.splits import caption_owners, noisy_caption_table
from evaluation.studies.synthetic_scenes import (
    COLOUR_TEMPLATES,
    COLOUR_WORDS,
    COLOURS,
    RELATION_TEMPLATES,
    RELATIONS,
    SHAPE_TEMPLATES,
    SHAPE_WORDS,
    SHAPES,
    SceneConfig,
    SceneWorld,
    colour_prompts,
    relation_prompts,
    shape_mask,
    shape_prompts,
    vocabulary,
)


@pytest.fixture(scope="module")
def world():
    return SceneWorld(SceneConfig())


@pytest.fixture(scope="module")
def train(world):
    return world.sample(600, seed=5, split="train")


def test_same_seed_same_images_and_captions(world):
    first, second = world.sample(40, seed=3), world.sample(40, seed=3)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.captions == second.captions and first.scenes == second.scenes
    other = world.sample(40, seed=4)
    assert not np.array_equal(first.images, other.images) and first.captions != other.captions
    # another split of the same seed is another draw
    assert world.sample(40, seed=3, split="test").captions != first.captions
    zs_a, zs_b = world.zero_shot_relations(20, seed=1), world.zero_shot_relations(20, seed=1)
    np.testing.assert_array_equal(zs_a.images, zs_b.images)
    np.testing.assert_array_equal(zs_a.extra["relation"], zs_b.extra["relation"])


def test_images_show_the_scene(world, train):
    """Every object's pixels carry its colour (independent check: the mask of the shape, the RGB of the colour)."""
    size = world.config.image_size
    assert train.images.shape == (600, 3, size, size) and train.images.dtype == np.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    from evaluation.studies.synthetic_scenes import RGB

    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    scene, image = train.scenes[0], train.images[0]
    last = scene.objects[-1]  # drawn last: nothing covers it
    mask = shape_mask(last.shape, xs - last.x, ys - last.y, last.radius)
    colour = image[:, mask].mean(1)
    assert np.abs(colour - np.array(RGB[last.colour])).max() < 0.15


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = text.replace(",", " ").split()
    return set(itertools.pairwise(words))


def test_held_out_compositions_never_in_training(world, train):
    held = set(world.held_out)
    assert held and all(pair not in world.seen for pair in held)
    assert all(obj.composition not in held for scene in train.scenes for obj in scene.objects)
    # ... nor in a caption: no "colour shape" word pair of a held-out composition, under any synonym
    forbidden = {
        (colour_word, shape_word)
        for shape, colour in held
        for colour_word, shape_word in itertools.product(COLOUR_WORDS[colour], SHAPE_WORDS[shape])
    }
    for group in train.captions:
        for caption in group:
            assert not _bigrams(caption) & forbidden, caption
    # every shape and every colour still occurs in training (only the combinations are new)
    seen_shapes = {obj.shape for scene in train.scenes for obj in scene.objects}
    seen_colours = {obj.colour for scene in train.scenes for obj in scene.objects}
    assert seen_shapes == set(SHAPES) and seen_colours == set(COLOURS)
    # the zero-shot sets are made of held-out compositions
    objects = world.zero_shot_objects(100, seed=2)
    assert all(scene.objects[0].composition in held for scene in objects.scenes)
    assert [SHAPES[i] for i in objects.extra["shape"]] == [s.objects[0].shape for s in objects.scenes]
    relations = world.zero_shot_relations(100, seed=2)
    assert all(any(o.composition in held for o in scene.objects) for scene in relations.scenes)
    assert len(set(relations.extra["relation"].tolist())) == len(RELATIONS)


def test_relations_are_geometrically_true(world):
    relations = world.zero_shot_relations(200, seed=7)
    for scene in relations.scenes:
        a, b = scene.objects
        dx, dy = b.x - a.x, b.y - a.y  # image y grows downwards
        expected = {"left": dx > 0, "right": dx < 0, "above": dy > 0, "below": dy < 0}[scene.relation]
        assert expected and (abs(dx) > abs(dy) if scene.relation in ("left", "right") else abs(dy) > abs(dx))


def test_prompt_templates_never_produced_by_the_grammar(train):
    captions = [caption for group in train.captions for caption in group]
    for template in (*SHAPE_TEMPLATES, *COLOUR_TEMPLATES, *RELATION_TEMPLATES):
        pattern = re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)))  # a slot: any words
        assert not any(pattern.fullmatch(caption) for caption in captions), template
    prompts = [p for group in shape_prompts() + colour_prompts() for p in group]
    assert not set(prompts) & set(captions)
    assert all(word in vocabulary() for p in prompts for word in p.split())
    assert all(word.strip(",") in vocabulary() for caption in captions for word in caption.split())


def test_relation_prompts_name_the_scene_objects(world):
    scene = world.zero_shot_relations(1, seed=0).scenes[0]
    prompts = relation_prompts(scene)
    assert len(prompts) == len(RELATIONS)
    a = f"{scene.objects[0].colour} {scene.objects[0].shape}"
    assert all(prompt.count(a) == 1 for group in prompts for prompt in group)


def test_unique_sets_have_distinct_scenes(world):
    test = world.sample(300, seed=0, split="test", unique=True)
    assert len({scene.key() for scene in test.scenes}) == 300


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_noise_never_leaves_a_caption_with_its_own_image(train, fraction):
    """Swapped captions come from another image and never repeat the text of one of the image's own captions."""
    table = noisy_caption_table(train.captions, np.arange(len(train)), fraction, seed=1234)
    texts, owners = caption_owners(train.captions)
    assert abs(table.noise_fraction - fraction) < 0.01
    for image, (ids, flags) in enumerate(zip(table.caption_ids.values(), table.noisy.values(), strict=True)):
        own = {text.lower() for text in train.captions[image]}
        for caption_id, noisy in zip(ids, flags, strict=True):
            if noisy:
                assert owners[caption_id] != image
                assert texts[caption_id].lower() not in own
            else:
                assert owners[caption_id] == image


def test_config_rejects_unknown_keys_and_pairs():
    with pytest.raises(ValueError, match="unknown keys"):
        SceneConfig.from_dict({"image_sise": 32})
    with pytest.raises(ValueError, match="held_out pair"):
        SceneWorld(SceneConfig(held_out=(("hexagon", "red"),)))
