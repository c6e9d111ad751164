"""``st-oblique demo``: the whole pipeline, offline, in about a minute on two CPU cores.

It trains a small oblique image-text model from random weights on scikit-learn's bundled handwritten digits
(8x8 grey images, shipped inside scikit-learn, so nothing is downloaded) with generated captions
("a handwritten seven", "the digit 7", ...), and

1. evaluates zero-shot classification on held-out digits with the evaluation harness, before and after training,
   with a prompt template never seen in training (CLIP_benchmark's MNIST template ``a photo of the number: "{c}".``);
2. trains through the same pipeline as ``st-oblique train`` (``SentenceTransformerTrainer``, a learnable logit
   scale, progress bars), saving the model, its card, ``training_report.json`` and ``training.png``;
3. reloads the saved model with :func:`st_oblique.load` and checks that it gives the same embeddings;
4. writes ``demo_report.json`` and says where everything is.

It demonstrates that the pieces work together; it makes no claim about the quality of oblique embeddings (a
2-layer model on 8x8 digits says nothing about CLIP-scale training).

The model: an open_clip CLIP with a small ResNet image tower (BatchNorm makes random features differ between
images from the first step; a randomly initialised ViT starts with almost identical outputs for all digits and
needs many more steps) and a 2-layer text transformer with open_clip's BPE tokenizer, K=8 tokens of d=16.
The 49,408-row word embedding table stays at its random initialisation (``freeze``): updating it dominated the
CPU time of a step, and a random table already tells the words apart.

Example::

    from st_oblique.app.demo import run_demo

    result = run_demo("st-oblique-demo")
    print(result.summary())
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import st_oblique
from st_oblique.app.train_config import TrainConfig
from st_oblique.app.train_data import TrainingData
from st_oblique.app.train_pipeline import register_open_clip_config, train
from st_oblique.data.datasets import ClassificationDataset, DatasetSpec, register_dataset
from st_oblique.data.datasets.registry import DIGIT_CLASSES, MNIST_TEMPLATES
from st_oblique.validators import check_positive_int

__all__ = [
    "CAPTION_TEMPLATES",
    "DEMO_ARCHITECTURE",
    "DEMO_EVAL_SET",
    "DemoResult",
    "demo_config",
    "digit_caption_data",
    "digits_split",
    "register_demo_eval_set",
    "run_demo",
]

DEMO_MODEL_NAME = "st-oblique-demo-clip"
DEMO_ARCHITECTURE: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""The demo's open_clip architecture: a ModifiedResNet image tower on 32 px images, a 2-layer text transformer."""

DEMO_EVAL_SET = "sklearn_digits_heldout"
"""The evaluation set of held-out digits (registered with the evaluation harness by :func:`register_demo_eval_set`)."""

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a handwritten {word}",
    "the digit {digit}",
    "a photo of the number {digit}",
    "a scan of a handwritten {word}",
    "the number {word}",
    "an image of the digit {word}",
    "a {digit} written by hand",
    "a grey picture of a {digit}",
)
"""Training captions. None is the evaluation template, so the zero-shot prompt is new to the model."""

SPLIT_SEED = 0
"""The train/test split is the same for every ``--seed``, so demo models of different seeds compare on one test set."""
STEPS = 60
QUICK_STEPS = 6
CAPTIONS_PER_IMAGE = 2
TEST_FRACTION = 0.2


@dataclass
class DemoResult:
    """The demo's numbers and files (also written to ``demo_report.json``)."""

    output_dir: Path
    chance: float
    untrained_accuracy: float
    trained_accuracy: float
    test_images: int
    steps: int
    seconds: dict[str, float]
    logit_scale: dict[str, float]
    loss: dict[str, float]
    reload_max_abs_difference: float
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data

    def summary(self) -> str:
        """What happened and where everything is, for the terminal."""
        folder = self.output_dir
        lines = [
            "",
            "st-oblique demo: a pipeline demonstration on scikit-learn's 8x8 digits, not a quality claim.",
            f"  Model: open_clip ResNet + 2-layer text transformer from random weights, K=8 tokens of d=16; "
            f"trained {self.steps} steps in {self.seconds['training']:.0f} s.",
            f"  Zero-shot accuracy on {self.test_images} held-out digits (prompt 'a photo of the number: \"{{c}}\".', "
            "never seen in training):",
            f"      chance {self.chance:.1%}   untrained {self.untrained_accuracy:.1%}   trained {self.trained_accuracy:.1%}",
            f"  Loss {self.loss['first']:.3f} -> {self.loss['final']:.3f}; learned logit scale "
            f"{self.logit_scale['initial']:.3f} -> {self.logit_scale['final']:.3f}.",
            f"  Reloaded with st_oblique.load: identical embeddings (max |difference| {self.reload_max_abs_difference:.1e}).",
            f"  Model and card:  {folder} (README.md)",
            f"  Plot:            {folder / self.files['plot']}",
            f"  Report:          {folder / self.files['report']} and {folder / self.files['demo_report']}",
            f"  Evaluation:      {folder / 'eval' / 'results.md'} (untrained: {folder / 'eval_untrained'})",
            f"  Total time {self.seconds['total']:.0f} s. Next: st-oblique info {folder}",
        ]
        return "\n".join(lines)


def digits_split(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, ...]:
    """scikit-learn's 1797 digits as uint8 images ``(N, 8, 8)`` in 0..255, split per class into train and test.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``.
    """

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 17 grey levels -> 0..255
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    return train_images, train_labels, test_images, test_labels


def digit_caption_data(images: np.ndarray, labels: np.ndarray, captions_per_image: int = CAPTIONS_PER_IMAGE,
                       seed: int = 0):
    """(image, caption) training pairs: each image with ``captions_per_image`` captions from different templates.

    Returns:
        A :class:`~st_oblique.app.train_data.TrainingData` with an ``Image()`` column and a caption column.
    """


    rng = random.Random(seed)
    rows_images, rows_captions = [], []
    for image, label in zip(images, labels, strict=True):
        picture = Image.fromarray(image)
        for template in rng.sample(CAPTION_TEMPLATES, captions_per_image):
            rows_images.append(picture)
            rows_captions.append(template.format(word=DIGIT_WORDS[label], digit=int(label)))
    dataset = Dataset.from_dict(
        {"image": rows_images, "caption": rows_captions},
        features=Features({"image": ImageFeature(), "caption": Value("string")}),
    )
    description = f"scikit-learn digits: {len(images)} training images x {captions_per_image} generated captions"
    return TrainingData(dataset, description, ["image"])


def register_demo_eval_set() -> str:
    """Register the held-out digits as a zero-shot evaluation set of the harness; returns its name.

    ``st-oblique eval --dataset sklearn_digits_heldout`` uses it (the command registers it).
    """

    def read(path: Path | None, split: str | None) -> ClassificationDataset:
        _, _, test_images, test_labels = digits_split()
        return ClassificationDataset(
            name=DEMO_EVAL_SET, images=list(test_images), labels=test_labels.astype(int).tolist(),
            classnames=list(DIGIT_CLASSES), templates=list(MNIST_TEMPLATES),
        )

    register_dataset(DatasetSpec(
        DEMO_EVAL_SET, "zeroshot_classification",
        f"the {TEST_FRACTION:.0%} of scikit-learn's digits held out by st-oblique demo", None, read, "mnist",
    ))
    return DEMO_EVAL_SET


def demo_config(output_dir: str | Path, *, steps: int = STEPS, seed: int = 0, overwrite: bool = False,
                progress: bool = True):
    """The :class:`~st_oblique.app.train_pipeline.TrainConfig` of the demo (the architecture must be registered first)."""

    return TrainConfig(
        backbone="open_clip", model=DEMO_MODEL_NAME, num_tokens=8, token_dim=16, freeze=[r"token_embedding"],
        loss="contrastive", scale=1.0, scale_mode="learnable", scale_learning_rate=1e-2,
        batch_size=64, max_steps=steps, learning_rate=1e-3, warmup=0.1, seed=seed, logging_steps=5,
        device="cpu", eval_datasets=[DEMO_EVAL_SET], eval_untrained=True, eval_batch_size=128,
        output_dir=str(output_dir), overwrite=overwrite, run_name="st-oblique-demo", progress=progress,
    )


def run_demo(
    output_dir: str | Path = "st-oblique-demo",
    *,
    steps: int | None = None,
    quick: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> DemoResult:
    """Run the demo (see the module docstring) into ``output_dir``.

    Args:
        output_dir: the run's folder. An earlier demo's folder there is replaced; any other non-empty folder
            needs ``overwrite``.
        steps: training steps (default 60; 6 with ``quick``, for tests, where accuracy stays near chance).
        quick: a fast smoke run.
        seed: the random seed (captions, initialisation, data order; the train/test split is fixed).
        overwrite: replace a non-empty ``output_dir`` that is not an earlier demo's.
        progress: show progress bars.
        command: the command line, for the report.

    Raises:
        RuntimeError: the reloaded model gives different embeddings (nothing is written then).
    """

    started = time.monotonic()
    if steps is not None:  # 0 is not "the default"
        check_positive_int(steps, name="steps (--steps)")
    steps = steps or (QUICK_STEPS if quick else STEPS)
    output_dir = Path(output_dir).expanduser()
    earlier_demo = (output_dir / "demo_report.json").is_file()
    with tempfile.TemporaryDirectory() as folder:
        architecture = Path(folder) / f"{DEMO_MODEL_NAME}.json"
        architecture.write_text(json.dumps(DEMO_ARCHITECTURE), encoding="utf-8")
        register_open_clip_config(architecture)
    register_demo_eval_set()
    train_images, train_labels, test_images, _ = digits_split()
    data = digit_caption_data(train_images, train_labels, seed=seed)
    config = demo_config(output_dir, steps=steps, seed=seed, overwrite=overwrite or earlier_demo, progress=progress)
    prompts = [f'a photo of the number: "{digit}".' for digit in range(10)]  # the evaluation prompts
    outcome: dict[str, Any] = {}

    def finish(result) -> None:


        images = [Image.fromarray(image) for image in test_images]
        reloaded = st_oblique.load(str(result.output_dir), device="cpu")
        difference = 0.0
        for inputs in (images, prompts):
            before = result.model.encode(inputs, convert_to_tensor=True, batch_size=128)
            after = reloaded.encode(inputs, convert_to_tensor=True, batch_size=128)
            difference = max(difference, float((before - after).abs().max()))
        if difference > 1e-5:
            raise RuntimeError(
                f"The reloaded model gives different embeddings (max |difference| {difference:.2e}); nothing was saved."
            )
        report = result.report
        training = report["training"]
        demo = DemoResult(
            output_dir=output_dir,  # where the folder goes (result.output_dir is still the staging folder)
            chance=1.0 / len(DIGIT_WORDS),
            untrained_accuracy=_accuracy(report["evaluation"]["untrained"]),
            trained_accuracy=_accuracy(report["evaluation"]["trained"]),
            test_images=len(test_images),
            steps=training["steps"],
            seconds={"training": training["seconds"], "total": round(time.monotonic() - started, 1)},
            logit_scale={"initial": training["initial_scale"], "final": training["final_scale"]},
            loss={"first": training["first_loss"], "final": training["final_loss"]},
            reload_max_abs_difference=difference,
            files={**report["files"], "demo_report": "demo_report.json"},
        )
        path = result.output_dir / "demo_report.json"
        path.write_text(json.dumps({"command": command, **demo.to_dict()}, indent=2) + "\n", encoding="utf-8")
        result.files["demo_report"] = path
        outcome["demo"] = demo

    result = train(config, train_data=data, command=command or "st-oblique demo", before_commit=finish)
    demo = outcome["demo"]
    demo.output_dir = result.output_dir
    demo.seconds["total"] = round(time.monotonic() - started, 1)
    return demo


def _accuracy(records: list[dict[str, Any]]) -> float:
    return next(float(record["metrics"]["acc1"]) for record in records if record["dataset"] == DEMO_EVAL_SET)
