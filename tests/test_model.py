from __future__ import annotations

import json
import shutil

import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny_models import SENTENCES

import st_oblique
from st_oblique.model.sentence_transformer import MODULE_CLASS_REFS, ObliqueSentenceTransformer


@pytest.fixture(scope="module", params=["first", "attention", "split"])
def saved_model(request, tiny_bert_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8, token_source=request.param)
    path = tmp_path_factory.mktemp(f"saved_{request.param}")
    model.save(str(path))
    return model, str(path)


def test_save_load_gives_identical_embeddings_for_every_source(saved_model):
    model, path = saved_model
    expected = model.encode(SENTENCES, convert_to_tensor=True)
    loaded = st_oblique.load(path)
    assert isinstance(loaded, ObliqueSentenceTransformer)
    torch.testing.assert_close(loaded.encode(SENTENCES, convert_to_tensor=True), expected, atol=1e-6, rtol=0)
    assert loaded.similarity_fn_name == "dot"
    assert loaded.get_embedding_dimension() == 32


def test_plain_sentence_transformer_needs_the_flag(saved_model):
    model, path = saved_model
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(path)
    plain = SentenceTransformer(path, trust_remote_code=True)
    torch.testing.assert_close(
        plain.encode(SENTENCES, convert_to_tensor=True), model.encode(SENTENCES, convert_to_tensor=True), atol=1e-6, rtol=0
    )
    assert plain.similarity_fn_name == "dot"


def test_saved_config_declares_dot_and_the_plugin_requirement(saved_model):
    _, path = saved_model
    with open(f"{path}/config_sentence_transformers.json") as handle:
        config = json.load(handle)
    assert config["similarity_fn_name"] == "dot"
    assert config["requirements"]["st-oblique"]["specifier"].startswith(">=")
    with open(f"{path}/modules.json") as handle:
        types = [entry["type"] for entry in json.load(handle)]
    assert all(t.count(".") >= 2 for t in types if t.startswith("st_oblique"))


def test_a_plain_model_with_oblique_pooling_saves_dot_even_when_unset(tiny_bert_dir, tmp_path):
    from sentence_transformers.sentence_transformer.modules import Transformer

    backbone = Transformer(tiny_bert_dir)
    model = SentenceTransformer(modules=[backbone, st_oblique.ObliquePooling(32, 2, 4, token_source="attention")])
    model.save(str(tmp_path))
    with open(tmp_path / "config_sentence_transformers.json") as handle:
        assert json.load(handle)["similarity_fn_name"] == "dot"


def test_unmet_plugin_requirement_names_the_install_command(saved_model, tmp_path):
    _, path = saved_model
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    config_path = copy / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["requirements"]["st-oblique"]["specifier"] = ">=99.0"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ImportError, match=r'pip install -U "st-oblique>=99.0"'):
        st_oblique.load(str(copy))


def test_only_st_oblique_classes_are_trusted(saved_model, tmp_path):
    _, path = saved_model
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    modules = json.loads((copy / "modules.json").read_text())
    modules[1]["type"] = "somepackage.modules.Evil"
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        st_oblique.load(str(copy))
    modules[1]["type"] = "st_oblique.modules.future.NewPooling"
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="newer release"):
        st_oblique.load(str(copy))


def test_every_module_class_is_registered():
    import importlib
    import pkgutil

    from sentence_transformers.base.modules import Module

    import st_oblique.modules as package

    found = set()
    for info in pkgutil.walk_packages(package.__path__, "st_oblique.modules."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Module) and value.__module__ == info.name:
                found.add(f"{value.__module__}.{value.__name__}")
    assert found <= set(MODULE_CLASS_REFS), f"register {sorted(found - set(MODULE_CLASS_REFS))} in st_oblique.modules.MODULE_CLASSES"
    assert all(ref.count(".") >= 2 for ref in MODULE_CLASS_REFS)


def test_public_names_resolve():
    for name in ("ObliquePooling", "oblique_text_model", "manifold", "ObliqueContrastiveLoss", "load"):
        assert getattr(st_oblique, name) is not None
    assert st_oblique.__version__
    with pytest.raises(AttributeError):
        st_oblique.does_not_exist  # noqa: B018


def test_truncate_dim_keeps_whole_tokens(tiny_bert_dir, tmp_path):
    from st_oblique import manifold

    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)
    full = model.encode(SENTENCES, convert_to_tensor=True)
    kept = model.encode(SENTENCES, convert_to_tensor=True, truncate_dim=16)
    torch.testing.assert_close(kept, manifold.truncate(full, keep_tokens=2, num_tokens=4))
    assert manifold.is_on_manifold(kept, num_tokens=2)
    with pytest.raises(ValueError, match=r"truncate_dim=12 would cut inside a token .* multiple of 8"):
        model.encode(SENTENCES, truncate_dim=12)
    with pytest.raises(ValueError, match="multiple of 8"), model.truncate_embeddings(truncate_dim=5):
        pass
    model.truncate_dim = 24  # saved with the model and checked again on load
    model.save(str(tmp_path / "model"))
    assert st_oblique.load(str(tmp_path / "model")).get_embedding_dimension() == 24
    with pytest.raises(ValueError, match="multiple of 8"):
        st_oblique.load(str(tmp_path / "model"), truncate_dim=10)
