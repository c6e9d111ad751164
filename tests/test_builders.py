from __future__ import annotations

import inspect
import re

import open_clip
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tiny_models import SENTENCES, tiny_clip, tiny_images, tiny_open_clip, tiny_timm
from transformers import AutoConfig, AutoProcessor

import st_oblique
from st_oblique import manifold
from st_oblique.model.loading_options import LOADING_OPTIONS, with_loading_options
from st_oblique.modules import ClassTokenTransformer, ObliquePooling


def test_oblique_text_model_builds_the_paper_design(tiny_bert_dir):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)
    backbone, pooling = model[0], model[1]
    assert isinstance(backbone, ClassTokenTransformer) and backbone.num_class_tokens == 4
    assert isinstance(pooling, ObliquePooling) and pooling.token_source == "first"
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    assert embeddings.shape == (len(SENTENCES), 32)
    assert manifold.is_on_manifold(embeddings, num_tokens=4)
    scores = model.similarity(embeddings, embeddings)
    torch.testing.assert_close(scores.diagonal(), torch.full((len(SENTENCES),), 4.0))
    assert model.similarity_fn_name == "dot"


@pytest.mark.parametrize("source", ["attention", "split"])
def test_pooling_sources_leave_the_encoder_unchanged(tiny_bert_dir, source):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8, token_source=source)
    assert model[0].num_class_tokens == 1


def test_last_is_refused_for_bidirectional_encoders(tiny_bert_dir):
    with pytest.raises(ValueError, match="causal"):
        st_oblique.oblique_text_model(tiny_bert_dir, token_source="last")


def test_builds_from_a_sentence_transformers_folder(tiny_bert_dir, tmp_path):
    transformer = Transformer(tiny_bert_dir, max_seq_length=12)
    SentenceTransformer(modules=[transformer, Pooling(32), Normalize()]).save(str(tmp_path))
    model = st_oblique.oblique_text_model(str(tmp_path), num_tokens=3, token_dim=4)
    assert [type(module).__name__ for module in model] == ["ClassTokenTransformer", "ObliquePooling"]
    assert model[0].max_seq_length == 12  # the saved setting of the ST model is kept
    assert model.preprocess([" ".join(["the man"] * 40)])["input_ids"].shape[1] == 12 + 2
    assert st_oblique.oblique_text_model(str(tmp_path), num_tokens=3, token_dim=4, max_seq_length=6)[0].max_seq_length == 6


# --- one loading convention for every builder ------------------------------------------------------------------------

BUILDERS = {
    st_oblique.oblique_text_model: ["model_name_or_path"],
    st_oblique.oblique_clip: ["model_name_or_path"],
    st_oblique.oblique_open_clip: ["model_name", "pretrained"],
    st_oblique.oblique_dual_encoder: ["text_model", "image_model"],
}


def test_builders_take_sentence_transformers_loading_options_keyword_only():
    st_parameters = inspect.signature(SentenceTransformer.__init__).parameters
    for builder, backbone_arguments in BUILDERS.items():
        parameters = inspect.signature(builder).parameters
        positional = [name for name, parameter in parameters.items() if parameter.kind is not parameter.KEYWORD_ONLY]
        assert positional == backbone_arguments, builder.__name__  # num_tokens, token_dim, ... are keyword-only
        assert [name for name in parameters if name in LOADING_OPTIONS] == list(LOADING_OPTIONS), builder.__name__
        for name in LOADING_OPTIONS:  # ST's names, keyword-only there too, with ST's defaults
            assert st_parameters[name].kind is st_parameters[name].KEYWORD_ONLY
            assert parameters[name].default == st_parameters[name].default, (builder.__name__, name)
    common = [set(inspect.signature(builder).parameters) - set(arguments) for builder, arguments in BUILDERS.items()]
    assert set.intersection(*common) >= {"num_tokens", "token_dim", "per_token_projection", "layer_norm",
                                          "max_seq_length", *LOADING_OPTIONS}


def test_builders_refuse_an_unknown_loading_option_naming_the_valid_ones(tiny_bert_dir):
    with pytest.raises(TypeError, match=r"oblique_open_clip\(\): got an unexpected keyword argument 'cache_dir'.*cache_folder"):
        st_oblique.oblique_open_clip("ViT-B-32", cache_dir="/tmp/cache")  # open_clip's own name for cache_folder
    with pytest.raises(TypeError, match="oblique_text_model"):
        st_oblique.oblique_text_model(tiny_bert_dir, 4)  # num_tokens is keyword-only


def test_every_builder_documents_every_loading_option():
    for builder in BUILDERS:
        args = builder.__doc__.split("Args:")[1].split("Returns:")[0]
        assert "<loading options>" not in args, builder.__name__
        for name in LOADING_OPTIONS:
            assert re.search(rf"^\s+{name}: \S", args, flags=re.MULTILINE), (builder.__name__, name)


def test_with_loading_options_needs_a_loading_catch_all(tmp_path):
    def builder(model_name_or_path: str, *, device: str | None = None):
        return model_name_or_path

    with pytest.raises(TypeError, match=r"\*\*loading"):
        with_loading_options(builder)

    @with_loading_options
    def accepting(model_name_or_path: str, *, revision: dict | None = None, **loading):
        return revision, loading

    revision, loading = accepting(str(tmp_path), revision={"text": "v1"}, token="t")  # its own revision wins
    assert revision == {"text": "v1"} and "revision" not in loading
    assert loading == {"cache_folder": None, "token": "t", "local_files_only": False, "trust_remote_code": False,
                       "model_kwargs": None, "processor_kwargs": None, "config_kwargs": None, "device": None}


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    """``(class name, path, kwargs)`` of every ``AutoConfig``/``AutoProcessor.from_pretrained`` call of the test."""
    calls = []
    for auto_class in (AutoConfig, AutoProcessor):
        original = auto_class.from_pretrained

        def spy(name, *args, _original=original, _kind=auto_class.__name__, **kwargs):
            calls.append((_kind, str(name), kwargs))
            return _original(name, *args, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", spy)
    return calls


def hub_options(tmp_path) -> dict:
    return {"cache_folder": str(tmp_path / "cache"), "revision": "v1", "token": "hf_test", "local_files_only": True,
            "trust_remote_code": True}


def assert_hub_options_reached(calls, path: str, tmp_path, revision: str = "v1") -> None:
    """Config and processor of ``path`` were loaded with the hub options, under transformers' names."""
    expected = {"cache_dir": str(tmp_path / "cache"), "revision": revision, "token": "hf_test",
                "local_files_only": True, "trust_remote_code": True}
    kinds = set()
    for kind, name, kwargs in calls:
        if name == path:
            kinds.add(kind)
            assert {key: kwargs.get(key) for key in expected} == expected, (kind, kwargs)
    assert kinds == {"AutoConfig", "AutoProcessor"}


def test_text_model_loading_options_reach_the_backbone(tiny_bert_dir, from_pretrained_calls, tmp_path):
    model = st_oblique.oblique_text_model(
        tiny_bert_dir, num_tokens=2, token_dim=4, **hub_options(tmp_path), model_kwargs={"dtype": torch.float64},
        config_kwargs={"hidden_dropout_prob": 0.25}, processor_kwargs={"model_max_length": 9}, device="cpu",
    )
    backbone = model[0]
    assert backbone.model.dtype == torch.float64 and backbone.model.config.hidden_dropout_prob == 0.25
    assert backbone.tokenizer.model_max_length == 9 and model.device.type == "cpu"
    assert_hub_options_reached(from_pretrained_calls, tiny_bert_dir, tmp_path)
    assert model.encode(SENTENCES, convert_to_tensor=True).shape == (len(SENTENCES), 8)


def test_clip_loading_options_reach_the_backbone(tmp_path, from_pretrained_calls):
    clip_dir = tiny_clip(tmp_path / "clip")
    model = st_oblique.oblique_clip(
        clip_dir, num_tokens=2, token_dim=8, **hub_options(tmp_path), model_kwargs={"dtype": torch.float64},
        config_kwargs={"logit_scale_init_value": 3.0}, processor_kwargs={"model_max_length": 12}, device="cpu",
    )
    clip = model[0]
    assert clip.model.dtype == torch.float64 and clip.model.config.logit_scale_init_value == 3.0
    assert clip.tokenizer.model_max_length == 12
    assert_hub_options_reached(from_pretrained_calls, clip_dir, tmp_path)
    assert model.encode(tiny_images(2), convert_to_tensor=True).shape == (2, 16)


def test_dual_encoder_options_apply_to_both_towers_with_per_tower_overrides(tiny_bert_dir, from_pretrained_calls, tmp_path):
    image_dir = tiny_timm(tmp_path / "vit")
    hub = {**hub_options(tmp_path), "revision": {"text": "v1", "image": "v2"}}  # a commit id belongs to one repo
    model = st_oblique.oblique_dual_encoder(
        tiny_bert_dir, image_dir, num_tokens=2, token_dim=4, **hub,
        model_kwargs={"dtype": torch.float64}, text_model_kwargs={"dtype": torch.float32},
        config_kwargs={"chunk_size_feed_forward": 3}, image_config_kwargs={"chunk_size_feed_forward": 5},
        text_processor_kwargs={"model_max_length": 9}, device="cpu",
    )
    text, image = (model[0].sub_modules[modality][0] for modality in ("text", "image"))
    assert (text.model.dtype, image.model.dtype) == (torch.float32, torch.float64)
    assert (text.config.chunk_size_feed_forward, image.config.chunk_size_feed_forward) == (3, 5)
    assert text.tokenizer.model_max_length == 9
    assert_hub_options_reached(from_pretrained_calls, tiny_bert_dir, tmp_path, revision="v1")
    assert_hub_options_reached(from_pretrained_calls, image_dir, tmp_path, revision="v2")
    assert model.encode(tiny_images(2), convert_to_tensor=True).shape == (2, 8)  # float64 ViT, float32 images
    assert model.model_card_data.base_model == [tiny_bert_dir, image_dir]
    with pytest.raises(ValueError, match=r"unknown tower\(s\) \['audio'\]"):
        st_oblique.oblique_dual_encoder(tiny_bert_dir, image_dir, revision={"audio": "v1"})


@pytest.fixture(scope="module")
def open_clip_name(tmp_path_factory) -> str:
    return tiny_open_clip(tmp_path_factory.mktemp("open_clip_configs"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"revision": "v1"}, r"cannot use revision='v1'.*snapshot_download"),
        ({"token": "hf_test"}, r"takes no token.*HF_TOKEN"),
        ({"trust_remote_code": True}, r"trust_remote_code does not apply"),
        ({"local_files_only": True, "pretrained": "laion2b_s34b_b79k"}, r"local_files_only.*HF_HUB_OFFLINE=1"),
        ({"model_kwargs": {"dtype": torch.float16}}, r"precision"),
        ({"model_kwargs": {"cache_dir": "x"}}, r"cache_folder"),
        ({"processor_kwargs": {"model_max_length": 9}}, r"not open_clip preprocessing settings"),
    ],
)
def test_open_clip_refuses_options_it_cannot_honour(open_clip_name, options, message):
    options = dict(options)
    pretrained = options.pop("pretrained", None)
    name = "ViT-B-32" if pretrained else open_clip_name
    with pytest.raises(ValueError, match=message):
        st_oblique.oblique_open_clip(name, pretrained, num_tokens=2, token_dim=8, **options)


def test_open_clip_loading_options_reach_the_backbone(open_clip_name, monkeypatch, tmp_path):
    calls = []
    for function in ("create_model", "get_tokenizer"):
        original = getattr(open_clip, function)

        def spy(*args, _original=original, **kwargs):
            calls.append(kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(open_clip, function, spy)
    cache = str(tmp_path / "cache")
    model = st_oblique.oblique_open_clip(
        open_clip_name, num_tokens=2, token_dim=8, cache_folder=cache, local_files_only=True,  # nothing to download
        model_kwargs={"precision": "bf16"}, config_kwargs={"embed_dim": 24},
        processor_kwargs={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}, device="cpu",
    )
    encoder = model[0]
    assert [call.get("cache_dir") for call in calls] == [cache, cache]
    assert calls[0]["precision"] == "bf16" and torch.bfloat16 in {p.dtype for p in encoder.model.parameters()}
    assert tuple(encoder.model.text_projection.shape) == (32, 24)  # the config override
    assert encoder.preprocess_cfg["std"] == (0.25, 0.25, 0.25)
    monkeypatch.undo()
    model.save(str(tmp_path / "saved"))
    loaded = st_oblique.load(str(tmp_path / "saved"))[0]  # config and preprocessing overrides are saved
    assert tuple(loaded.model.text_projection.shape) == (32, 24) and list(loaded.preprocess_cfg["std"]) == [0.25] * 3
