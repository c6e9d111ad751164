"""Canary tests of st_oblique._compat: one per private hook or relied-on behaviour of an upstream library (1-12).

Each fails with a message naming the hook and what upstream changed, so that a new sentence-transformers or
transformers release breaks here, loudly, instead of silently changing st-oblique's behaviour. The last test checks
that importing st-oblique, building its losses and training with its trainer replace no attribute of any
sentence-transformers class (nor of transformers' ``Trainer``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import mteb
import numpy as np
import pytest
import torch
from clip_benchmark.metrics import zeroshot_classification as clip_benchmark_classification
from datasets import Dataset
from mteb.cli.build_cli import build_cli
from mteb.models.model_implementations import MODEL_REGISTRY
from sentence_transformers import (
    InputExample,
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.model import BaseModel
from sentence_transformers.base.modules import Router
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from tiny_models import SENTENCES, tiny_image_caption_dataset, tiny_timm
from torch.utils.data import DataLoader
from transformers import Trainer

import st_oblique
from st_oblique import ObliqueContrastiveLoss, ObliqueSentenceTransformer, ObliqueSigmoidLoss
from st_oblique._compat import (
    clip_benchmark_numpy2_fix,
    loaded_model_card,
    model_id_placeholder,
    mteb_registered_model_meta,
    register_mteb_model_meta,
    register_mteb_task,
    set_loaded_model_card,
    similarity_fn_name_if_set,
    write_model_card_file,
)
from st_oblique.evaluation.mteb_tasks import LocalSTSBenchmark
from st_oblique.modules import ModalityRouter, ObliquePooling

K, D = 2, 4
TESTS = Path(__file__).resolve().parent


def hook(number: int, name: str) -> str:
    return f"{name} (st_oblique._compat hook {number})"


@pytest.fixture
def oblique(tiny_bert_dir):
    torch.manual_seed(0)
    return st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)


@pytest.fixture
def saved(oblique, tmp_path) -> Path:
    oblique.save(str(tmp_path / "saved"))
    return tmp_path / "saved"


def plain_model(tiny_bert_dir: str, **kwargs) -> SentenceTransformer:
    backbone = Transformer(tiny_bert_dir)
    return SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension())], **kwargs)


# -- 1: BaseModel._module_classes ----------------------------------------------------------------------------------


def test_hook_1_module_classes_load_oblique_models_without_trust_remote_code(saved):
    name = hook(1, "BaseModel._module_classes")
    assert "_module_classes" in vars(BaseModel), (
        f"sentence-transformers removed {name}: st_oblique.load can no longer trust st-oblique's module classes; "
        "find ST's new way of resolving modules.json types without trust_remote_code."
    )
    assert ObliqueSentenceTransformer._module_classes is ObliqueSentenceTransformer.trusted_module_classes
    assert "st_oblique.modules.pooling.ObliquePooling" in ObliqueSentenceTransformer._module_classes

    loaded = ObliqueSentenceTransformer(str(saved))  # no trust_remote_code
    assert isinstance(loaded[1], ObliquePooling), f"{name} is no longer consulted when loading modules.json"
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(saved))
    assert isinstance(SentenceTransformer(str(saved), trust_remote_code=True)[1], ObliquePooling)


# -- 2: SentenceTransformer._get_model_config ----------------------------------------------------------------------


def test_hook_2_model_config_is_saved_and_its_requirements_are_checked_on_load(oblique, saved):
    name = hook(2, "SentenceTransformer._get_model_config")
    assert callable(getattr(SentenceTransformer, "_get_model_config", None)), f"sentence-transformers removed {name}"
    config_path = saved / "config_sentence_transformers.json"
    written = json.loads(config_path.read_text())
    assert written == json.loads(json.dumps(oblique._get_model_config())), (
        f"{name} is no longer what ST writes to config_sentence_transformers.json"
    )
    assert "st-oblique" in written.get("requirements", {}), f"{name}: the st-oblique requirement is not saved"

    written["requirements"]["st-oblique"]["specifier"] = ">=999"
    config_path.write_text(json.dumps(written))
    try:
        ObliqueSentenceTransformer(str(saved))
    except ImportError as error:
        assert 'pip install -U "st-oblique>=999"' in str(error), str(error)
    else:
        pytest.fail(f"ST no longer checks the `requirements` that {name} writes when it loads a model")


# -- 3: SentenceTransformer._similarity_fn_name --------------------------------------------------------------------


def test_hook_3_similarity_fn_name_is_none_until_chosen(tiny_bert_dir, oblique):
    name = hook(3, "SentenceTransformer._similarity_fn_name")
    model = plain_model(tiny_bert_dir)
    assert "_similarity_fn_name" in vars(model), f"sentence-transformers removed {name}"
    assert model._similarity_fn_name is None and similarity_fn_name_if_set(model) is None, (
        f"{name} is no longer None when no similarity function was chosen"
    )
    model.similarity_fn_name = "euclidean"
    assert similarity_fn_name_if_set(model) == "euclidean", f"{name} no longer records the public setter's value"
    chosen = plain_model(tiny_bert_dir, similarity_fn_name="manhattan")
    assert similarity_fn_name_if_set(chosen) == "manhattan"

    # What st-oblique does with it: "dot" when unset, a user's choice kept.
    assert oblique.similarity_fn_name == "dot"
    modules = [oblique[0], oblique[1]]
    assert SentenceTransformer(modules=modules).similarity_fn_name == "dot"
    assert SentenceTransformer(modules=modules, similarity_fn_name="cosine").similarity_fn_name == "cosine"


# -- 4: BaseModel._model_card_text ---------------------------------------------------------------------------------


def test_hook_4_the_loaded_readme_is_kept_and_reused_by_save(oblique, saved, tmp_path):
    name = hook(4, "BaseModel._model_card_text")
    assert "_model_card_text" in vars(oblique) and loaded_model_card(oblique) is None, (
        f"sentence-transformers no longer sets {name} on a new model"
    )
    loaded = ObliqueSentenceTransformer(str(saved))
    readme = (saved / "README.md").read_text(encoding="utf-8")
    assert loaded_model_card(loaded) == readme, f"{name} no longer holds the README a model was loaded with"

    edited = readme + "\n<!-- canary: an edited card -->\n"
    set_loaded_model_card(loaded, edited)
    loaded.save(str(tmp_path / "again"))
    assert (tmp_path / "again" / "README.md").read_text(encoding="utf-8") == edited, (
        f"ST's save no longer reuses {name}: evaluation results set on a loaded card would be lost"
    )
    set_loaded_model_card(loaded, None)
    loaded.save(str(tmp_path / "fresh"))
    assert "canary" not in (tmp_path / "fresh" / "README.md").read_text(encoding="utf-8")


# -- 5: BaseModel._create_model_card -------------------------------------------------------------------------------


def test_hook_5_create_model_card_writes_the_readme_save_writes(oblique, saved, tmp_path):
    name = hook(5, "BaseModel._create_model_card")
    assert "_create_model_card" in vars(BaseModel), f"sentence-transformers removed {name}"
    assert list(inspect.signature(BaseModel._create_model_card).parameters)[1] == "path", (
        f"{name} no longer takes the folder as its first argument"
    )
    write_model_card_file(oblique, str(tmp_path))
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert card == (saved / "README.md").read_text(encoding="utf-8"), f"{name} no longer writes what save writes"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "saved"], "it wrote more than the card"


# -- 6: BaseModel._model_card_model_id_placeholder -----------------------------------------------------------------


def test_hook_6_the_placeholder_id_line_is_filled_in_by_st(oblique, tmp_path):
    name = hook(6, "BaseModel._model_card_model_id_placeholder")
    placeholder = vars(BaseModel).get("_model_card_model_id_placeholder")
    assert isinstance(placeholder, str), f"sentence-transformers removed {name}"
    assert model_id_placeholder(oblique) == type(oblique)._model_card_model_id_placeholder == placeholder
    write_model_card_file(oblique, str(tmp_path))
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert f'model = ObliqueSentenceTransformer("{placeholder}"' in card

    oblique.model_card_data.set_model_id("canary-user/canary-model")
    filled = 'model = ObliqueSentenceTransformer("canary-user/canary-model"'
    assert filled in oblique._update_default_model_id(card), (
        f"ST no longer replaces `model = <ModelClass>(\"<{name}>\"` with the Hub id: pushed cards would keep the "
        "placeholder in their usage snippet"
    )
    # ... which is what happens when a reused card is written (push_to_hub saves, then uploads).
    set_loaded_model_card(oblique, card)
    (tmp_path / "pushed").mkdir()
    write_model_card_file(oblique, str(tmp_path / "pushed"))
    pushed = (tmp_path / "pushed" / "README.md").read_text(encoding="utf-8")
    assert filled in pushed and placeholder not in pushed


# -- 7: the trainer demands router_mapping for exactly Router --------------------------------------------------------


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> str:
    return tiny_timm(tmp_path_factory.mktemp("compat_vit"), "test_vit", image_size=32)


def trainer_args(output_dir: Path, **overrides) -> SentenceTransformerTrainingArguments:
    options = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, report_to=[], use_cpu=True, save_strategy="no",
        disable_tqdm=True, seed=0,
    )
    return SentenceTransformerTrainingArguments(**{**options, **overrides})


def test_hook_7_trainer_needs_no_router_mapping_for_a_modality_router(tiny_bert_dir, vit_dir, tmp_path):
    name = hook(7, "the trainer's exact-class test `Router in [module.__class__ ...]`")
    torch.manual_seed(0)
    dual = st_oblique.oblique_dual_encoder(tiny_bert_dir, vit_dir, num_tokens=K, token_dim=D, device="cpu")
    assert type(dual[0]) is ModalityRouter and issubclass(ModalityRouter, Router)
    try:
        SentenceTransformerTrainer(
            model=dual, args=trainer_args(tmp_path / "dual"), train_dataset=tiny_image_caption_dataset(4),
            loss=ObliqueContrastiveLoss(dual),
        )
    except ValueError as error:
        if "router_mapping" not in str(error):
            raise
        pytest.fail(
            f"ST's trainer now demands router_mapping for a Router subclass ({name} became isinstance?): dual "
            "encoders need router_mapping={'image': 'image', 'caption': 'text'}, or ModalityRouter must tell ST it "
            f"routes by modality. ST said: {error}"
        )

    router = Router.for_query_document([Transformer(tiny_bert_dir)], [Transformer(tiny_bert_dir)])
    plain = SentenceTransformer(modules=[router, Pooling(32)])
    pairs = Dataset.from_dict({"anchor": SENTENCES[:4], "positive": SENTENCES[4:]})
    with pytest.raises(ValueError, match="router_mapping"):
        SentenceTransformerTrainer(
            model=plain, args=trainer_args(tmp_path / "plain"), train_dataset=pairs,
            loss=MultipleNegativesRankingLoss(plain),
        )


# -- 8: weight decay leaves parameters named *bias* out ------------------------------------------------------------


def temperature_names(loss) -> set[str]:
    temperatures = {id(parameter) for parameter in loss.temperature_parameters().values()}
    return {name for name, parameter in loss.named_parameters() if id(parameter) in temperatures}


def test_hook_8_trainer_decay_grouping_skips_the_temperatures(oblique, tmp_path):
    name = hook(8, "transformers' Trainer.get_decay_parameter_names")
    losses = [ObliqueContrastiveLoss(oblique, learnable_scale=True), ObliqueSigmoidLoss(oblique)]
    # the model's temperature, seen through the loss (whose model is a submodule): named *bias*
    assert temperature_names(losses[1]) == {"model.1.temperature.log_scale_bias", "model.1.temperature.logit_bias"}
    pairs = Dataset.from_dict({"anchor": SENTENCES[:4], "positive": SENTENCES[4:]})
    for loss in losses:
        trainer = SentenceTransformerTrainer(
            model=oblique, args=trainer_args(tmp_path, weight_decay=0.1), train_dataset=pairs, loss=loss
        )
        decayed = set(trainer.get_decay_parameter_names(loss))
        assert "model.1.heads.default.projection" in decayed  # the grouping still decays the model
        assert not decayed & temperature_names(loss), (
            f"{name} now decays {sorted(decayed & temperature_names(loss))}: the learnable temperatures would be "
            "pulled towards 1; rename them or keep them out of decay another way"
        )
        assert set(Trainer.get_decay_parameter_names(trainer, loss)) == decayed


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that keeps its parameter groups for the test (``model.fit`` builds the optimizer itself)."""

    groups: list[dict] = []

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        RecordingAdamW.groups = self.param_groups


def test_hook_8_fit_decay_grouping_skips_the_temperatures(oblique, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # fit's trainer may create its default output folder in the working directory
    name = hook(8, "model.fit's no_decay list")
    loss = ObliqueSigmoidLoss(oblique)
    pairs = [InputExample(texts=[a, p]) for a, p in zip(SENTENCES[:4], SENTENCES[4:], strict=True)]
    oblique.fit(
        train_objectives=[(DataLoader(pairs, batch_size=4), loss)], epochs=1, weight_decay=0.5,
        optimizer_class=RecordingAdamW, optimizer_params={"lr": 1e-3}, warmup_steps=0, show_progress_bar=False,
    )
    groups = RecordingAdamW.groups
    for temperature in loss.temperature_parameters().values():
        decay = [group["weight_decay"] for group in groups if any(p is temperature for p in group["params"])]
        assert decay == [0.0], f"{name} now gives a learnable temperature weight decay {decay}"
    projection = oblique[1].heads["default"].projection
    assert [g["weight_decay"] for g in groups if any(p is projection for p in g["params"])] == [0.5]


# -- 9-11: mteb's model registry, task registry and command-line parser ------------------------------------------


def test_hook_9_mteb_model_registry_is_the_dict_get_model_reads():
    name = hook(9, "mteb.models.model_implementations.MODEL_REGISTRY")
    assert isinstance(MODEL_REGISTRY, dict), f"mteb changed {name}: it is no longer a dict of ModelMeta by name."
    meta = mteb.get_model_meta("sentence-transformers/all-MiniLM-L6-v2").model_copy(update={"name": "canary/hook-9"})
    register_mteb_model_meta(meta)
    try:
        assert mteb_registered_model_meta("canary/hook-9") is meta
        assert mteb.get_model_meta("canary/hook-9") is meta, (
            f"mteb.get_model_meta no longer reads {name}: st_oblique.evaluation.register_mteb_model has no effect; "
            "look for mteb's new way of registering a model."
        )
    finally:
        MODEL_REGISTRY.pop("canary/hook-9")


def test_hook_10_mteb_task_registry_is_the_dict_get_tasks_reads():
    name = hook(10, "mteb.get_tasks._TASKS_REGISTRY")
    registry = importlib.import_module("mteb.get_tasks")._TASKS_REGISTRY

    class CanaryTask(LocalSTSBenchmark):
        metadata = LocalSTSBenchmark.metadata.model_copy(update={"name": "CanaryHook10"})

        def __init__(self):
            pass  # get_task builds the class with no arguments; no data is needed here

    register_mteb_task(CanaryTask)
    try:
        task = mteb.get_tasks(tasks=["CanaryHook10"])[0]
        assert isinstance(task, CanaryTask), f"mteb.get_tasks(tasks=[...]) no longer reads {name}."
        with pytest.raises(ValueError, match="already has a task named"):
            register_mteb_task(type("Other", (CanaryTask,), {}))
    finally:
        registry.pop("CanaryHook10")


def test_hook_11_mteb_cli_parser_takes_an_argument_list():
    name = hook(11, "mteb.cli.build_cli.build_cli")
    args = build_cli().parse_args(["run", "-m", "org/model", "-t", "STS16", "--output-folder", "out"])
    assert (args.model, args.tasks, args.output_folder) == ("org/model", ["STS16"], "out"), (
        f"mteb changed the options of `mteb run` ({name}); st-oblique mteb rewrites -m/--model and --model-revision."
    )
    assert callable(args.func)


def test_hook_12_clip_benchmark_accuracy_is_looked_up_by_evaluate_and_replaced_only_in_the_block():
    name = hook(12, "clip_benchmark.metrics.zeroshot_classification.accuracy")
    assert "accuracy" in clip_benchmark_classification.evaluate.__code__.co_names, (
        f"clip-benchmark's evaluate no longer calls the module's accuracy ({name}); clip_benchmark_numpy2_fix no "
        "longer reaches it: remove it and check the parity tests."
    )
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([1, 0, 1, 2])
    expected = [0.5, 1.0]  # top-1: rows 0 and 1 right; top-3 of 3 classes: all right
    original = clip_benchmark_classification.accuracy
    try:
        unpatched = original(logits, target, topk=(1, 3))
    except TypeError:  # float() of a 1-element array, refused by NumPy >= 2.4: the reason for the hook
        unpatched = None
    if unpatched is not None and np.lib.NumpyVersion(np.__version__) >= "2.4.0":
        pytest.fail(f"clip-benchmark's accuracy works unpatched on NumPy {np.__version__} ({name}): remove the hook.")
    with clip_benchmark_numpy2_fix():
        assert clip_benchmark_classification.accuracy is not original
        assert clip_benchmark_classification.accuracy(logits, target, topk=(1, 3)) == expected
    assert clip_benchmark_classification.accuracy is original  # restored: nothing replaced process-wide
    assert unpatched in (None, expected)


# -- no process-wide patches -----------------------------------------------------------------------------------------

SNAPSHOT = r"""
import importlib, inspect, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import sentence_transformers, transformers

for info in pkgutil.walk_packages(sentence_transformers.__path__, "sentence_transformers."):
    try:
        importlib.import_module(info.name)
    except Exception:  # an optional backend (onnx, openvino, ...) that is not installed
        pass
modules = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "sentence_transformers"}
classes = {transformers.Trainer, transformers.TrainingArguments}
for module in modules.values():
    classes.update(
        value for value in vars(module).values()
        if inspect.isclass(value) and value.__module__.split(".")[0] == "sentence_transformers"
    )
before = {cls: dict(vars(cls)) for cls in classes}
module_before = {name: dict(vars(module)) for name, module in modules.items()}

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainingArguments
from tiny_models import SENTENCES, tiny_bert

import st_oblique
from st_oblique import CachedObliqueContrastiveLoss, ObliqueContrastiveLoss, ObliqueSigmoidLoss, ObliqueTrainer

torch.set_num_threads(1)
model = st_oblique.oblique_text_model(tiny_bert(sys.argv[2] + "/bert"), num_tokens=2, token_dim=4)
losses = {
    "contrastive": ObliqueContrastiveLoss(model, learnable_scale=True),
    "cached": CachedObliqueContrastiveLoss(model, learnable_scale=True, mini_batch_size=2),
    "sigmoid": ObliqueSigmoidLoss(model, learnable_scale=True, learnable_bias=True),
}
args = SentenceTransformerTrainingArguments(
    output_dir=sys.argv[2] + "/run", per_device_train_batch_size=4, max_steps=1, report_to=[], use_cpu=True,
    save_strategy="no", disable_tqdm=True,
)
pairs = Dataset.from_dict({"anchor": SENTENCES[:4], "positive": SENTENCES[4:]})
for loss in losses.values():
    ObliqueTrainer(model=model, args=args, train_dataset=pairs, loss=loss).train()

missing = object()
changed = [
    f"{cls.__module__}.{cls.__qualname__}.{key}"
    for cls, attributes in before.items()
    for key in set(attributes) | set(vars(cls))
    if attributes.get(key, missing) is not vars(cls).get(key, missing)
]
changed += [
    f"{name}.{key}"  # module globals replaced or removed (new lazily imported submodules are fine)
    for name, attributes in module_before.items()
    for key, value in attributes.items()
    if vars(sys.modules[name]).get(key, missing) is not value
]
print(json.dumps({"classes": len(before), "changed": sorted(changed)}))
"""


@pytest.mark.slow  # a fresh interpreter imports all of sentence-transformers (~10 s on 2 cores)
def test_st_oblique_replaces_no_attribute_of_sentence_transformers(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, str(TESTS), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classes"] > 100  # every class of sentence-transformers' submodules was recorded
    assert report["changed"] == [], (
        "importing st_oblique, building its losses or training with ObliqueTrainer replaced attributes of "
        f"sentence-transformers / transformers: {report['changed']}"
    )
