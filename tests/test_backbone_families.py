"""The table of backbone families (st_oblique.builders.families): everything that lists families reads it, and what
it says about each family is true of the models its builder makes."""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys

import pytest
import torch
from sentence_transformers.base.modules import Module
from sentence_transformers.util import import_from_string
from tiny_models import TINY_OPEN_CLIP_CONFIG, tiny_clip, tiny_timm

import st_oblique
import st_oblique.builders
from st_oblique.app.options import add_dataclass_options
from st_oblique.app.train_config import TrainConfig
from st_oblique.app.train_pipeline import build_model
from st_oblique.builders.families import BACKBONE_FAMILIES, builder_exports, family_of, family_option_names
from st_oblique.errors import ObliqueConfigError
from st_oblique.model.sentence_transformer import MODULE_CLASS_REFS
from st_oblique.modules import MODULE_CLASSES

K, D = 2, 4


def test_every_builder_is_exported_under_its_name():
    assert builder_exports() == {
        "oblique_clip": "st_oblique.builders.clip",
        "oblique_open_clip": "st_oblique.builders.open_clip",
        "oblique_text_model": "st_oblique.builders.text",
        "oblique_dual_encoder": "st_oblique.builders.dual",
    }
    for family in BACKBONE_FAMILIES.values():
        builder = family.load_builder()
        assert getattr(st_oblique, builder.__name__) is builder
        assert getattr(st_oblique.builders, builder.__name__) is builder
        assert builder.__name__ in st_oblique.__all__ and builder.__name__ in st_oblique.builders.__all__


def test_the_table_speaks_the_builders_and_the_commands_language():
    """Every option the table names is a training option, and every builder keyword it maps one to exists."""
    options = set(TrainConfig.field_names())
    for family in BACKBONE_FAMILIES.values():
        parameters = inspect.signature(family.load_builder()).parameters
        positional = [name for name, parameter in parameters.items() if parameter.kind is parameter.POSITIONAL_OR_KEYWORD]
        assert len(family.arguments) == len(positional), family.name
        assert set(family.required) <= set(family.arguments) and set(family.arguments) <= options
        assert set(family.options) <= options, family.name
        assert {keyword for keyword in family.options.values() if keyword} <= set(parameters), family.name
        assert {"num_tokens", "token_dim", "per_token_projection", "layer_norm", "device"} <= set(parameters)
        assert set(family.module_classes) <= set(MODULE_CLASSES), family.name
    assert family_option_names()["token_source"] == ["text", "dual"]
    assert family_option_names()["pretrained"] == ["open_clip"]
    assert "max_seq_length" not in family_option_names()  # every family takes it


def test_builder_arguments_leave_unset_options_to_the_builder():
    dual = BACKBONE_FAMILIES["dual"]
    values = {"text_model": "t", "image_model": "i", "token_source": None, "image_token_source": "attention",
              "max_seq_length": None, "trust_remote_code": False}
    assert dual.builder_arguments(values) == (
        ["t", "i"], {"image_token_source": "attention", "trust_remote_code": False}
    )
    open_clip = BACKBONE_FAMILIES["open_clip"]
    values = {"model": "ViT-B-32", "pretrained": None, "open_clip_config": "arch.json", "open_clip_model_kwargs": {}}
    assert open_clip.builder_arguments(values) == (["ViT-B-32"], {"config_kwargs": {}})  # the app registers the file


def test_module_class_registry_is_what_the_model_layer_trusts():
    assert MODULE_CLASS_REFS == tuple(f"{module}.{name}" for name, module in MODULE_CLASSES.items())
    for ref in MODULE_CLASS_REFS:
        cls = import_from_string(ref)
        assert issubclass(cls, Module) and f"{cls.__module__}.{cls.__name__}" == ref
        assert getattr(st_oblique.modules, cls.__name__) is cls


def test_the_command_line_reads_the_table_without_torch():
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, TrainConfig)
    backbone = next(action for action in parser._actions if action.dest == "backbone")
    assert backbone.choices == list(BACKBONE_FAMILIES)
    assert all(f"{family.summary} ({name})" in backbone.help for name, family in BACKBONE_FAMILIES.items())
    code = (
        "import sys; import st_oblique.app.train_config, st_oblique.app.cli, st_oblique.builders.families; "
        "print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backbone": "resnet"}, "Unknown backbone 'resnet'; choose clip, open_clip, text or dual."),
        ({"backbone": "dual", "text_model": "t"}, "--backbone dual needs --image-model. --backbone dual takes"),
        ({"backbone": "dual", "text_model": "t", "image_model": "i", "model": "m"},
         "--model is for --backbone clip, open_clip or text, not dual."),
        ({"backbone": "clip", "model": "m", "token_source": "first"}, "--token-source is for --backbone text or dual"),
        ({"backbone": "text", "model": "m", "open_clip_config": "a.json"}, "--open-clip-config is for --backbone open_clip"),
    ],
)
def test_config_checks_come_from_the_table(options, message):
    with pytest.raises(ObliqueConfigError) as error:
        TrainConfig(pairs="pairs.tsv", output_dir="out", **options).validate()
    assert message in str(error.value)


@pytest.fixture(scope="module")
def family_configs(tmp_path_factory, tiny_bert_dir) -> dict[str, TrainConfig]:
    root = tmp_path_factory.mktemp("families")
    open_clip_config = root / "tiny-families-clip.json"
    open_clip_config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    common = {"num_tokens": K, "token_dim": D, "device": "cpu"}
    return {
        "clip": TrainConfig(backbone="clip", model=tiny_clip(root / "clip"), **common),
        "open_clip": TrainConfig(backbone="open_clip", open_clip_config=str(open_clip_config), **common),
        "text": TrainConfig(backbone="text", model=tiny_bert_dir, token_source="attention", **common),
        "dual": TrainConfig(
            backbone="dual", text_model=tiny_bert_dir, image_model=tiny_timm(root / "cnn", "test_efficientnet"),
            max_seq_length=16, **common,
        ),
    }


@pytest.mark.parametrize("name", list(BACKBONE_FAMILIES))
def test_build_model_builds_each_family_as_the_table_says(name, family_configs):
    family = BACKBONE_FAMILIES[name]
    config = family_configs[name]
    assert sorted(family_configs) == sorted(BACKBONE_FAMILIES)  # a new family needs a tiny config here
    torch.manual_seed(0)
    model = build_model(config)
    classes = {type(module) for module in model.modules()}
    found = {cls.__name__ for cls in classes if MODULE_CLASSES.get(cls.__name__) == cls.__module__}
    assert found == set(family.module_classes)
    assert family_of(found) is family
    assert set(model.modalities) == set(family.modalities)  # what the model encodes
    pooling = model[-1]
    assert (pooling.num_tokens, pooling.token_dim) == (K, D)
    if name == "text":  # a family option reaches the builder under its keyword
        assert {head.token_source for head in pooling.heads.values()} == {"attention"}
    if name == "dual":
        assert model.max_seq_length == 16
    if name == "open_clip":  # random weights: no base model on the card
        assert model.model_card_data.base_model is None
