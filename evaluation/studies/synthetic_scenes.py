"""Synthetic compositional scenes for regime C of the topology study: small images and captions, made from a seed.

A scene is 1–3 objects on a plain background. Each object has a shape, a colour, a size and a position; two
objects stand in a spatial relation (left of, right of, above, below). Captions come from a small grammar with
synonyms ("circle" / "disk", "small" / "little" / "tiny", "to the left of" / "left of") and word-order variation
("a small red circle to the left of a blue square", "a blue square with a small red circle on its left", "blue
square, red circle on its left", "a blue square to the right of a small red circle"). Nothing is stored: the same
seed gives the same images and captions (byte for byte).

Compositionality is controlled exactly: a set of **held-out compositions** (shape–colour pairs, e.g. "red
triangle") never occurs in a training image or caption; the zero-shot sets are made of them and are read with
**prompt templates the grammar never produces** ("an image of a {shape}", "this is {colour}").

Example::

    world = SceneWorld(SceneConfig(image_size=32))
    train = world.sample(2000, seed=1, split="train")        # no held-out composition
    train.images.shape                                       # (2000, 3, 32, 32) float32 in [0, 1]
    train.captions[0]                                        # e.g. ['a tiny green cross at the top left', ...]
    zs = world.zero_shot_objects(300, seed=2)               # single objects, every one a held-out composition
    rel = world.zero_shot_relations(300, seed=3)            # object pairs in a relation, one object held out
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")
BACKGROUNDS = ("black", "gray", "brown")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

RGB = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "purple": (0.65, 0.2, 0.85),
}
BACKGROUND_RGB = {"black": (0.03, 0.03, 0.03), "gray": (0.45, 0.45, 0.45), "brown": (0.35, 0.22, 0.1)}

# The grammar's words (the first of each list is the canonical one, used by the zero-shot class names).
SHAPE_WORDS = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle", "wedge"),
    "cross": ("cross", "plus"),
}
COLOUR_WORDS = {
    "red": ("red", "crimson"),
    "green": ("green", "lime"),
    "blue": ("blue", "azure"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
RELATION_WORDS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
# "B with A on its left" / "B, A on its left": the relation of A to B said from B's side.
RELATION_TAILS = {
    "left": ("on its left",),
    "right": ("on its right",),
    "above": ("above it",),
    "below": ("below it", "under it"),
}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
POSITION_WORDS = {name: (f"at the {name}", f"in the {name}") for name in POSITIONS}
BACKGROUND_PHRASES = ("on a {bg} background", "on {bg}")

# Zero-shot prompt templates: sentence frames the caption grammar never produces (a test checks it).
SHAPE_TEMPLATES = ("an image of a {shape}", "this is a {shape}", "a picture with one {shape}")
COLOUR_TEMPLATES = ("something {colour}", "this is {colour}", "a {colour} object")
RELATION_TEMPLATES = ("the {a} is {relation} the {b}", "here the {a} sits {relation} the {b}")
RELATION_PROMPT_WORDS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}

DEFAULT_HELD_OUT = (
    ("circle", "red"),
    ("square", "green"),
    ("triangle", "blue"),
    ("cross", "yellow"),
    ("circle", "purple"),
)
"""One held-out shape per colour (each shape and each colour still occurs in training, in other pairs)."""


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float
    y: float
    radius: float

    @property
    def composition(self) -> tuple[str, str]:
        return (self.shape, self.colour)


@dataclass(frozen=True)
class Scene:
    """One scene: its objects, the background, and what the captions can say about it.

    ``relation`` is the relation of ``objects[0]`` to ``objects[1]`` (None for one object); ``position`` is the
    3×3 cell of a single object.
    """

    objects: tuple[SceneObject, ...]
    background: str
    relation: str | None
    position: str | None

    def key(self) -> tuple:
        """What a caption can express (two scenes with the same key can get the same captions)."""
        objects = tuple((o.shape, o.colour, o.size) for o in self.objects)
        head = objects[:2] if self.relation else objects
        rest = tuple(sorted(objects[2:])) if self.relation else ()
        return (self.background, head, rest, self.relation, self.position)


@dataclass(frozen=True)
class SceneConfig:
    """Settings of the synthetic world.

    Attributes:
        image_size: side of the square images in pixels.
        object_counts: possible numbers of objects and their probabilities.
        captions_per_image: captions drawn per image (different grammar choices).
        held_out: (shape, colour) pairs that never occur in training.
        pixel_noise: std of the Gaussian noise added to every pixel.
    """

    image_size: int = 32
    object_counts: tuple[int, ...] = (1, 2, 3)
    object_count_probabilities: tuple[float, ...] = (0.3, 0.45, 0.25)
    captions_per_image: int = 3
    held_out: tuple[tuple[str, str], ...] = DEFAULT_HELD_OUT
    pixel_noise: float = 0.03

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SceneConfig:
        values = dict(values)
        for key in ("object_counts", "object_count_probabilities"):
            if key in values:
                values[key] = tuple(values[key])
        if "held_out" in values:
            values["held_out"] = tuple(tuple(pair) for pair in values["held_out"])
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"SceneConfig: unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}.")
        return cls(**values)


@dataclass
class SceneSet:
    """Rendered scenes.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in [0, 1].
        captions: N lists of captions.
        scenes: the N scene descriptions.
    """

    images: np.ndarray
    captions: list[list[str]]
    scenes: list[Scene]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scenes)


class SceneWorld:
    """The generator: scenes, their images and captions, and the zero-shot sets, all from seeds.

    Args:
        config: the world's settings.
    """

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        for shape, colour in self.config.held_out:
            if shape not in SHAPES or colour not in COLOURS:
                raise ValueError(f"held_out pair {(shape, colour)!r}: shapes are {SHAPES}, colours {COLOURS}.")
        self.held_out = frozenset(self.config.held_out)
        self.seen = tuple(pair for pair in ((s, c) for s in SHAPES for c in COLOURS) if pair not in self.held_out)

    # ------------------------------------------------------------------------------------------------------
    # scenes
    # ------------------------------------------------------------------------------------------------------

    def sample(self, count: int, seed: int, split: str = "train", unique: bool = False) -> SceneSet:
        """``count`` scenes of seen compositions only (any split: held-out pairs are for zero-shot only).

        Args:
            count: number of scenes.
            seed: the scenes, images and captions depend only on it (and the config).
            split: a label recorded in the seed stream, so two splits of one seed differ.
            unique: no two scenes with the same :meth:`Scene.key` (retrieval sets: every caption has one image).
        """
        rng = np.random.default_rng([seed, _label(split)])
        scenes: list[Scene] = []
        keys: set[tuple] = set()
        attempts = 0
        while len(scenes) < count:
            attempts += 1
            if attempts > 50 * count + 1000:
                raise ValueError(f"Could not draw {count} distinct scenes; ask for fewer (unique=True).")
            n = int(rng.choice(self.config.object_counts, p=self.config.object_count_probabilities))
            scene = self._scene(rng, [self._composition(rng, held_out=False) for _ in range(n)])
            if scene is None or (unique and scene.key() in keys):
                continue
            keys.add(scene.key())
            scenes.append(scene)
        return self._render_set(scenes, rng)

    def zero_shot_objects(self, count: int, seed: int) -> SceneSet:
        """Single-object scenes whose (shape, colour) is a held-out composition; ``extra`` has the labels."""
        rng = np.random.default_rng([seed, _label("zero-shot objects")])
        scenes = []
        while len(scenes) < count:
            scene = self._scene(rng, [self._composition(rng, held_out=True)])
            if scene is not None:
                scenes.append(scene)
        result = self._render_set(scenes, rng)
        result.extra = {
            "shape": np.array([SHAPES.index(s.objects[0].shape) for s in scenes]),
            "colour": np.array([COLOURS.index(s.objects[0].colour) for s in scenes]),
        }
        return result

    def zero_shot_relations(self, count: int, seed: int) -> SceneSet:
        """Two-object scenes, at least one object a held-out composition; ``extra["relation"]``: the relation of
        the first object to the second (index in :data:`RELATIONS`)."""
        rng = np.random.default_rng([seed, _label("zero-shot relations")])
        scenes = []
        while len(scenes) < count:
            first_held = bool(rng.integers(2))
            pair = [self._composition(rng, held_out=first_held), self._composition(rng, held_out=not first_held)]
            if not first_held and rng.integers(2):
                pair[0] = self._composition(rng, held_out=True)
            scene = self._scene(rng, pair, n_objects=2)
            if scene is not None and pair[0][:2] != pair[1][:2]:
                scenes.append(scene)
        result = self._render_set(scenes, rng)
        result.extra = {"relation": np.array([RELATIONS.index(s.relation) for s in scenes])}
        return result

    def _composition(self, rng: np.random.Generator, held_out: bool) -> tuple[str, str, str]:
        pool = sorted(self.held_out) if held_out else self.seen
        shape, colour = pool[int(rng.integers(len(pool)))]
        return shape, colour, SIZES[int(rng.integers(len(SIZES)))]

    def _scene(self, rng: np.random.Generator, parts: Sequence[tuple[str, str, str]], n_objects: int | None = None):
        """Place the objects (None when they do not fit without touching; the caller draws again)."""
        size = self.config.image_size
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        radii = [self._radius(rng, part[2]) for part in parts]
        if len(parts) == 1:
            cell = int(rng.integers(9))
            row, col = divmod(cell, 3)
            third = size / 3
            r = radii[0]
            x = np.clip((col + 0.5) * third + rng.uniform(-0.15, 0.15) * third, r + 1, size - r - 1)
            y = np.clip((row + 0.5) * third + rng.uniform(-0.15, 0.15) * third, r + 1, size - r - 1)
            obj = SceneObject(*parts[0], x=float(x), y=float(y), radius=r)
            return Scene((obj,), background, None, POSITIONS[cell])
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        placed: list[SceneObject] = []
        for _ in range(30):
            placed = self._place_pair(rng, parts[:2], radii[:2], relation)
            if placed:
                break
        if not placed:
            return None
        for part, r in zip(parts[2:], radii[2:], strict=True):
            for _ in range(30):
                x, y = rng.uniform(r + 1, size - r - 1, size=2)
                if all(np.hypot(x - o.x, y - o.y) > r + o.radius + 1.5 for o in placed):
                    placed.append(SceneObject(*part, x=float(x), y=float(y), radius=r))
                    break
            else:
                return None
        return Scene(tuple(placed), background, relation, None)

    def _radius(self, rng: np.random.Generator, size_name: str) -> float:
        low, high = (0.09, 0.12) if size_name == "small" else (0.17, 0.21)
        return float(rng.uniform(low, high) * self.config.image_size)

    def _place_pair(self, rng, parts, radii, relation) -> list[SceneObject]:
        """Object 0 ``relation`` object 1: clearly apart along the relation's axis, close along the other."""
        size = self.config.image_size
        ra, rb = radii
        gap = ra + rb + 2
        along_a = rng.uniform(ra + 1, size - rb - 1 - gap)
        along_b = rng.uniform(along_a + gap, size - rb - 1)
        across = rng.uniform(max(ra, rb) + 1, size - max(ra, rb) - 1)
        shift = rng.uniform(-0.08, 0.08) * size
        across_a, across_b = (
            np.clip(across + shift, ra + 1, size - ra - 1),
            np.clip(across - shift, rb + 1, size - rb - 1),
        )
        if relation in ("right", "below"):
            along_a, along_b = size - along_a, size - along_b
        if relation in ("left", "right"):
            (xa, ya), (xb, yb) = (along_a, across_a), (along_b, across_b)
        else:
            (xa, ya), (xb, yb) = (across_a, along_a), (across_b, along_b)
        if not (ra + 1 <= xa <= size - ra - 1 and rb + 1 <= xb <= size - rb - 1):
            return []
        if not (ra + 1 <= ya <= size - ra - 1 and rb + 1 <= yb <= size - rb - 1):
            return []
        return [
            SceneObject(*parts[0], x=float(xa), y=float(ya), radius=ra),
            SceneObject(*parts[1], x=float(xb), y=float(yb), radius=rb),
        ]

    # ------------------------------------------------------------------------------------------------------
    # images and captions
    # ------------------------------------------------------------------------------------------------------

    def _render_set(self, scenes: list[Scene], rng: np.random.Generator) -> SceneSet:
        images = np.stack([self.render(scene, rng) for scene in scenes])
        captions = [[caption(scene, rng) for _ in range(self.config.captions_per_image)] for scene in scenes]
        return SceneSet(images=images, captions=captions, scenes=scenes)

    def render(self, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        """``(3, S, S)`` float32 image in [0, 1] (background tint, objects, colour jitter and pixel noise)."""
        size = self.config.image_size
        image = np.empty((size, size, 3), dtype=np.float32)
        image[:] = np.array(BACKGROUND_RGB[scene.background]) + rng.uniform(-0.04, 0.04, size=3)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        for obj in scene.objects:
            mask = shape_mask(obj.shape, xs - obj.x, ys - obj.y, obj.radius)
            image[mask] = np.clip(np.array(RGB[obj.colour]) + rng.uniform(-0.07, 0.07, size=3), 0, 1)
        image += rng.normal(0, self.config.pixel_noise, size=image.shape).astype(np.float32)
        return np.clip(image, 0, 1).transpose(2, 0, 1).copy()


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius ``r`` centred at offsets ``(dx, dy)`` = 0."""
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        half = 0.82 * r
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # pointing up: the half-width grows from the apex to the base
        inside = (dy >= -r) & (dy <= 0.8 * r)
        return inside & (np.abs(dx) <= (dy + r) / 1.8 * 1.05)
    if shape == "cross":
        arm = 0.33 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"Unknown shape {shape!r}; shapes are {SHAPES}.")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def noun_phrase(obj: SceneObject, rng: np.random.Generator, article: bool = True) -> str:
    """ "a small red circle", "a red circle" (size left out 30% of the time), "little crimson disk"."""
    words = []
    if rng.random() >= 0.3:
        words.append(_pick(rng, SIZE_WORDS[obj.size]))
    words += [_pick(rng, COLOUR_WORDS[obj.colour]), _pick(rng, SHAPE_WORDS[obj.shape])]
    return ("a " if article else "") + " ".join(words)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of ``scene`` from the grammar (random synonyms, word order and optional background)."""
    objects = scene.objects
    if scene.relation is None:
        np_ = noun_phrase(objects[0], rng)
        where = _pick(rng, POSITION_WORDS[scene.position])
        text = f"{np_} {where}" if rng.random() < 0.6 else f"{where}, {np_}"
    else:
        a, b = objects[0], objects[1]
        form = int(rng.integers(4))
        if form == 0:  # A rel B
            text = f"{noun_phrase(a, rng)} {_pick(rng, RELATION_WORDS[scene.relation])} {noun_phrase(b, rng)}"
        elif form == 1:  # B inverse-rel A
            text = f"{noun_phrase(b, rng)} {_pick(rng, RELATION_WORDS[INVERSE[scene.relation]])} {noun_phrase(a, rng)}"
        elif form == 2:  # B with A on its left
            text = f"{noun_phrase(b, rng)} with {noun_phrase(a, rng)} {_pick(rng, RELATION_TAILS[scene.relation])}"
        else:  # B, A on its left
            tail = _pick(rng, RELATION_TAILS[scene.relation])
            text = f"{noun_phrase(b, rng, article=False)}, {noun_phrase(a, rng, article=False)} {tail}"
        for extra in objects[2:]:
            text = (
                f"{text} and {noun_phrase(extra, rng)}"
                if rng.random() < 0.5
                else f"{noun_phrase(extra, rng)} and {text}"
            )
    if rng.random() < 0.5:
        text = f"{text} {_pick(rng, BACKGROUND_PHRASES).format(bg=scene.background)}"
    return text


def shape_prompts() -> list[list[str]]:
    """Per shape (in :data:`SHAPES` order), its zero-shot prompts."""
    return [[template.format(shape=shape) for template in SHAPE_TEMPLATES] for shape in SHAPES]


def colour_prompts() -> list[list[str]]:
    """Per colour (in :data:`COLOURS` order), its zero-shot prompts."""
    return [[template.format(colour=colour) for template in COLOUR_TEMPLATES] for colour in COLOURS]


def relation_prompts(scene: Scene) -> list[list[str]]:
    """Per relation (in :data:`RELATIONS` order), prompts naming the scene's two objects in that relation."""
    a, b = (f"{o.colour} {o.shape}" for o in scene.objects[:2])
    return [
        [template.format(a=a, b=b, relation=RELATION_PROMPT_WORDS[relation]) for template in RELATION_TEMPLATES]
        for relation in RELATIONS
    ]


def vocabulary() -> list[str]:
    """Every word the captions and the zero-shot prompts can contain (for a word-level tokenizer)."""
    texts = [
        " ".join(words)
        for table in (SHAPE_WORDS, COLOUR_WORDS, SIZE_WORDS, RELATION_WORDS, RELATION_TAILS, POSITION_WORDS)
        for words in table.values()
    ]
    texts += [
        *BACKGROUNDS,
        *BACKGROUND_PHRASES,
        "a with and",
        *SHAPE_TEMPLATES,
        *COLOUR_TEMPLATES,
        *RELATION_TEMPLATES,
        *RELATION_PROMPT_WORDS.values(),
    ]
    words = {word.strip(",") for text in texts for word in text.replace("{", " {").split() if "{" not in word}
    return sorted(word for word in words if word)


def _label(name: str) -> int:
    """A stable integer for a split name (Python's hash() is salted per process)."""
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little")


__all__ = [
    "COLOURS",
    "RELATIONS",
    "SHAPES",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "SceneSet",
    "SceneWorld",
    "caption",
    "colour_prompts",
    "relation_prompts",
    "shape_prompts",
    "vocabulary",
]
