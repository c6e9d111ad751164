"""The oblique model card: ST's parts kept, oblique section, results table, snippets, regeneration rules."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
from sentence_transformers.base.modules import Router
from sentence_transformers.sentence_transformer import model_card as st_model_card
from tiny_models import SENTENCES, tiny_clip, tiny_images, tiny_oblique_clip, tiny_timm

import st_oblique
from st_oblique import ObliqueModelCardData, ObliquePooling, ObliqueSentenceTransformer
from st_oblique.model.card import (
    DEFAULT_IMAGE_URLS,
    EVALUATION_END,
    EVALUATION_START,
    TEMPLATE_PATH,
    format_evaluation_results,
    set_card_evaluation_results,
    write_model_card,
)
from st_oblique.model.description import TOKEN_SOURCE_DESCRIPTIONS
from st_oblique.modules import ClassTokenTransformer


@pytest.fixture(scope="module")
def text_model(tiny_bert_dir):
    torch.manual_seed(0)
    return st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)


def template_variables(path) -> set[str]:
    with open(path, encoding="utf-8") as handle:
        return jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(handle.read()))


def test_template_keeps_every_part_sentence_transformers_generates():
    st_template = st_model_card.SentenceTransformerModelCardData().template_path
    ours = template_variables(TEMPLATE_PATH)
    assert template_variables(st_template) <= ours
    assert {"oblique", "oblique_results"} <= ours


def test_saved_card_has_the_oblique_section(text_model, tmp_path):
    text_model.save(str(tmp_path / "model"))
    readme = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    card = ModelCard(readme)
    assert {"st-oblique", "oblique-manifold", "modality:text"} <= set(card.data.tags)
    assert card.data.base_model is None  # built from a local folder: no Hub link to it
    assert "K = 4 tokens of d = 8 dimensions" in readme and "K·d = 32 values" in readme
    assert "| text | BertModel | `first` | 4 class tokens at the front: [CLS] and 3 copies" in readme
    assert "inverse temperature):** 1 (fixed) (temperature 1)" in readme  # a new model's default
    assert "Training loss:** not recorded" in readme
    assert f"**Parameters:** {sum(p.numel() for p in text_model.parameters()):,}" in readme
    assert "pip install -U st-oblique" in readme and "pip install -U sentence-transformers" not in readme
    assert 'model = ObliqueSentenceTransformer("sentence_transformers_model_id")' in readme
    assert "# Oblique similarity: the sum of the 4 per-token cosines, in [-4, 4]" in readme
    assert "@article{sun2022design" in readme
    assert f"{EVALUATION_START}\n\n{EVALUATION_END}" in readme  # empty until results are given


def test_snippet_printed_similarities_match_the_model(text_model):
    data = text_model.model_card_data
    data.model_id = None
    data.to_dict()
    embeddings = text_model.encode(data.usage_examples, convert_to_tensor=True)
    expected = text_model.similarity(embeddings, embeddings)
    # the printed tensor, as Sentence Transformers formats it (its layout differs between versions): the numbers
    assert data.similarities.startswith("# tensor([[")
    printed = [float(number) for number in re.findall(r"-?\d+\.\d*(?:e-?\d+)?", data.similarities)]
    assert printed == pytest.approx(expected.flatten().tolist(), abs=1e-4)


def test_snippet_of_a_model_with_query_and_document_prompts(tiny_bert_dir):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=2, token_dim=4)
    model.prompts = {"query": "query: ", "document": "document: "}
    model.model_card_data.ir_model = True
    model.model_card_data.model_id = "user/oblique-ir"
    snippet = model.model_card_data.generate_usage_snippet()
    assert 'model = ObliqueSentenceTransformer("user/oblique-ir")' in snippet
    assert "query_embeddings = model.encode_query(queries)" in snippet
    assert "similarities = model.similarity(query_embeddings, document_embeddings)" in snippet


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    return tiny_oblique_clip(tiny_clip(tmp_path_factory.mktemp("tiny_clip")), num_tokens=2, token_dim=4)


def test_image_model_without_training_images_shows_a_photo_url_and_does_not_download(clip_model):
    data = ObliqueModelCardData()
    data.register_model(clip_model)
    data.run_usage_snippet()
    snippet = data.generate_usage_snippet()
    assert data.usage_examples == list(DEFAULT_IMAGE_URLS) and data.similarities is None
    assert "image_embeddings = model.encode(images)" in snippet and "text_embeddings = model.encode(texts)" in snippet
    assert "similarities = model.similarity(image_embeddings, text_embeddings)" in snippet
    assert "print(similarities.shape)\n# [1, 3]" in snippet


def test_image_model_snippet_uses_training_images_and_captions(clip_model):
    images = tiny_images(4)
    data = ObliqueModelCardData(model_id="user/oblique-clip")
    data.register_model(clip_model)
    data.set_widget_examples(Dataset.from_dict({"image": images, "text": SENTENCES[:4]}))
    data.run_usage_snippet()
    assert data.usage_text_examples == SENTENCES[:3]
    assert all(not isinstance(item, str) for item in data.usage_examples)  # PIL images, saved as assets on save
    image_embeddings = clip_model.encode(data.usage_examples, convert_to_tensor=True)
    text_embeddings = clip_model.encode(SENTENCES[:3], convert_to_tensor=True)
    expected = clip_model.similarity(image_embeddings, text_embeddings)
    # the printed tensor, as Sentence Transformers formats it (its layout differs between versions): the numbers
    assert data.similarities.startswith("# tensor([[")
    printed = [float(number) for number in re.findall(r"-?\d+\.\d*(?:e-?\d+)?", data.similarities)]
    assert printed == pytest.approx(expected.flatten().tolist(), abs=1e-4)


def test_dual_encoder_card_encodes_images_and_texts(tiny_bert_dir, tmp_path):
    from st_oblique.builders import oblique_dual_encoder

    torch.manual_seed(0)
    model = oblique_dual_encoder(
        tiny_bert_dir, tiny_timm(tmp_path / "timm", architecture="test_efficientnet"), num_tokens=2, token_dim=4
    )
    data = model.model_card_data
    assert data.ir_model is False  # a router by modality is not a query/document model
    data.set_widget_examples(Dataset.from_dict({"image": tiny_images(4), "text": SENTENCES[:4]}))
    model.save(str(tmp_path / "model"))
    readme = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "| text | BertModel | `first` |" in readme and "| image | TimmWrapperModel | `attention` |" in readme
    assert "images = [\n    'assets/image_0.jpg'," in readme and f"texts = [\n    {SENTENCES[0]!r}," in readme
    assert "similarities = model.similarity(image_embeddings, text_embeddings)\nprint(similarities)\n# tensor(" in readme


def test_dual_encoder_card_names_both_base_models(tiny_bert_dir, tmp_path):
    from st_oblique.builders import oblique_dual_encoder
    from st_oblique.modules.tower_lock import lock_tower

    image_dir = tiny_timm(tmp_path / "timm", architecture="test_efficientnet")

    def card_of(base_model, name: str) -> tuple[ModelCard, str]:
        model = oblique_dual_encoder(tiny_bert_dir, image_dir, num_tokens=2, token_dim=4)
        assert model.model_card_data.base_model == [tiny_bert_dir, image_dir]  # the builder names both towers
        if base_model is not None:
            model.model_card_data.base_model = base_model
        lock_tower(model, "image")
        model.save(str(tmp_path / name))
        readme = (tmp_path / name / "README.md").read_text(encoding="utf-8")
        return ModelCard(readme), readme

    card, readme = card_of(["org/text-encoder", "org/image-encoder"], "hub")
    assert card.data.base_model == ["org/text-encoder", "org/image-encoder"]  # the Hub's YAML takes a list
    assert (
        "finetuned from [org/text-encoder](https://huggingface.co/org/text-encoder) and "
        "[org/image-encoder](https://huggingface.co/org/image-encoder)"
    ) in readme
    assert "**Base models:** [org/text-encoder](https://huggingface.co/org/text-encoder), [org/image-encoder]" in readme
    assert "# ObliqueSentenceTransformer based on org/text-encoder and org/image-encoder" in readme
    assert "; the pretrained image tower is locked (frozen, kept in eval mode while training)" in readme
    card, readme = card_of(["org/text-encoder", image_dir], "mixed")  # a local folder is still dropped
    assert card.data.base_model == "org/text-encoder" and "finetuned from [org/text-encoder](" in readme
    card, readme = card_of(None, "local")  # both towers from local folders: named as text, no Hub metadata
    assert card.data.base_model is None
    towers = [f"{Path(path).name} (local folder `{path}`)" for path in (tiny_bert_dir, image_dir)]
    assert f"model finetuned from {towers[0]} and {towers[1]}. It maps" in readme
    assert f"- **Base models:** {towers[0]}, {towers[1]}" in readme and "huggingface.co/unknown" not in readme
    # an image-text model is for image-text search and zero-shot classification, not ST's text-task wording
    assert "can be used for text-to-image and image-to-text search, and zero-shot image classification" in readme
    assert "paraphrase mining" not in readme


def test_evaluation_results_from_a_dict_or_a_json_file(tmp_path):
    results = {"command": "python evaluation/run.py", "flickr8k": {"t2i": {"R@1": 0.25, "R@5": 0.5}}, "note": "x"}
    table = format_evaluation_results(results)
    assert table["rows"] == [("flickr8k / t2i", "R@1", 0.25), ("flickr8k / t2i", "R@5", 0.5)]
    assert "| flickr8k / t2i | R@1 | 0.2500 |" in table["section"]
    assert "```bash\npython evaluation/run.py\n```" in table["section"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert format_evaluation_results(str(tmp_path / "results.json")) == table
    assert format_evaluation_results({"spearman": 0.8})["rows"] == [("", "spearman", 0.8)]
    with pytest.raises(ValueError, match="does not exist"):
        format_evaluation_results(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        format_evaluation_results(tmp_path / "bad.json")


def test_evaluation_results_written_by_the_harness(tmp_path):
    retrieval = {
        "dataset": "flickr8k", "model": "oblique", "pretrained": "w-1", "task": "zeroshot_retrieval", "language": "en",
        "metrics": {"image_retrieval_recall@1": 0.125, "text_retrieval_recall@1": 0.25, "image_retrieval_recall@50": 0.9},
        "num_samples": 1000,  # shown: a --max-samples subset must not read as the whole set
    }
    sts = {"dataset": "STSBenchmark", "task": "mteb", "metrics": {"main_score": 0.5, "cosine_pearson": 0.4}}
    expected = [
        ("flickr8k (zeroshot_retrieval, 1000 samples)", "image_retrieval_recall@1", 0.125),
        ("flickr8k (zeroshot_retrieval, 1000 samples)", "text_retrieval_recall@1", 0.25),
        ("STSBenchmark (mteb)", "main_score", 0.5),
    ]
    assert format_evaluation_results([retrieval, sts])["rows"] == expected
    summary = {"settings": {"command": "st-oblique evaluate", "batch_size": 8}, "versions": {}, "results": [retrieval, sts]}
    table = format_evaluation_results(summary)
    assert table["rows"] == expected and table["command"] == "st-oblique evaluate"
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(retrieval))
    (folder / "b.json").write_text(json.dumps(sts))
    (folder / "summary.json").write_text(json.dumps(summary))
    assert format_evaluation_results(folder)["rows"] == expected  # records only: the summary is not counted twice
    assert format_evaluation_results({"dataset": "x", "task": "other", "metrics": {"f1": 0.5, "n": None}})["rows"][0] == (
        "x (other)", "f1", 0.5
    )


def test_results_replace_the_section_of_an_existing_card():
    card = f"# Model\n\n{EVALUATION_START}\n## st-oblique Evaluation\n\nold\n{EVALUATION_END}\n\n## Training Details\nkept\n"
    updated = set_card_evaluation_results(card, {"sts": {"spearman": 0.75}})
    assert "old" not in updated and "| sts | spearman | 0.7500 |" in updated and updated.endswith("## Training Details\nkept\n")
    without_markers = set_card_evaluation_results("# Model\n\n## Training Details\nkept\n", {"spearman": 0.5})
    assert without_markers.index("| - | spearman | 0.5000 |") < without_markers.index("## Training Details")


def test_write_model_card_keeps_a_loaded_card_and_adds_results(text_model, tmp_path):
    path = tmp_path / "model"
    text_model.save(str(path))
    with open(path / "README.md", "a", encoding="utf-8") as handle:
        handle.write("\nHand-written note.\n")
    output = write_model_card(
        st_oblique.load(str(path)), tmp_path / "cards" / "card.md", model_id="user/oblique",
        evaluation_results={"command": "st-oblique evaluate", "sts": {"spearman": 0.75}},
    )
    card = output.read_text(encoding="utf-8")
    assert "Hand-written note." in card and "| sts | spearman | 0.7500 |" in card
    assert 'ObliqueSentenceTransformer("user/oblique")' in card
    assert not (tmp_path / "cards" / "assets").exists()


def test_write_model_card_with_a_hub_id_links_the_example_images_of_a_loaded_card(tiny_bert_dir, tmp_path):
    """A card kept from training was rendered without a Hub id: with ``model_id`` its snippet's images and the
    samples table's pictures point into that repository, not at relative files the Hub shows as broken."""
    from huggingface_hub import constants as hub_constants

    from st_oblique.builders import oblique_dual_encoder

    torch.manual_seed(0)
    model = oblique_dual_encoder(
        tiny_bert_dir, tiny_timm(tmp_path / "timm", architecture="test_efficientnet"), num_tokens=2, token_dim=4
    )
    model.model_card_data.set_widget_examples(Dataset.from_dict({"image": tiny_images(4), "text": SENTENCES[:4]}))
    model.save(str(tmp_path / "model"))
    saved = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "'assets/image_0.jpg'" in saved  # relative while the model has no Hub id
    card = write_model_card(st_oblique.load(str(tmp_path / "model")), tmp_path / "card.md", model_id="user/lit")
    card_text = card.read_text(encoding="utf-8")
    url = f"{hub_constants.ENDPOINT}/user/lit/resolve/main/assets/"
    assert f"'{url}image_0.jpg'" in card_text
    assert ("src=\"assets/" in saved) == (f'src="{url}' in card_text)
    assert "'assets/" not in card_text and 'src="assets/' not in card_text


def test_example_card_script_writes_a_generated_card(text_model, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "evaluation" / "make_example_card.py"
    spec = importlib.util.spec_from_file_location("make_example_card", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text_model.save(str(tmp_path / "model"))
    record = {"dataset": "flickr8k", "task": "zeroshot_retrieval", "metrics": {"image_retrieval_recall@1": 0.125}}
    (tmp_path / "results.json").write_text(json.dumps(record))
    args = [str(tmp_path / "model"), "--results", str(tmp_path / "results.json"), "--output", str(tmp_path / "card.md")]
    card = module.main(args).read_text(encoding="utf-8")
    assert "| flickr8k (zeroshot_retrieval) | image_retrieval_recall@1 | 0.1250 |" in card
    assert card.rstrip().endswith("-->") and "Generated by: python evaluation/make_example_card.py" in card
    ModelCard(card)


def test_loaded_card_is_reused_and_its_model_id_filled_in(text_model, tmp_path):
    path = tmp_path / "model"
    text_model.save(str(path))
    with open(path / "README.md", "a", encoding="utf-8") as handle:
        handle.write("\nHand-written note.\n")
    loaded = st_oblique.load(str(path))
    loaded.model_card_data.model_id = "user/oblique"
    loaded.save(str(tmp_path / "again"))
    readme = (tmp_path / "again" / "README.md").read_text(encoding="utf-8")
    assert "Hand-written note." in readme  # Sentence Transformers' rule: an untrained loaded model keeps its card
    assert 'ObliqueSentenceTransformer("user/oblique")' in readme and "sentence_transformers_model_id" not in readme


def test_card_written_by_plain_sentence_transformers_is_regenerated(text_model, tmp_path):
    path = tmp_path / "model"
    text_model.save(str(path))
    plain = SentenceTransformer(str(path), trust_remote_code=True)
    assert type(plain.model_card_data) is SentenceTransformerModelCardData
    plain._model_card_text = None
    plain.save(str(tmp_path / "plain"))
    assert "st_oblique.load" not in (tmp_path / "plain" / "README.md").read_text(encoding="utf-8")
    shutil.copy(tmp_path / "plain" / "README.md", path / "README.md")
    loaded = st_oblique.load(str(path))
    loaded.save(str(tmp_path / "oblique"))
    readme = (tmp_path / "oblique" / "README.md").read_text(encoding="utf-8")
    assert "### Oblique Embedding" in readme and 'ObliqueSentenceTransformer("' in readme
    (path / "README.md").write_text("# My oblique model\n\nLoad it with st_oblique.load.\n", encoding="utf-8")
    st_oblique.load(str(path)).save(str(tmp_path / "hand_written"))
    assert (tmp_path / "hand_written" / "README.md").read_text(encoding="utf-8").startswith("# My oblique model")


def test_plain_card_data_passed_to_the_model_becomes_oblique(text_model):
    data = SentenceTransformerModelCardData(language="en", license="mit", tags=["custom"])
    model = ObliqueSentenceTransformer(modules=list(text_model), model_card_data=data)
    assert isinstance(model.model_card_data, ObliqueModelCardData)
    assert model.model_card_data.language == ["en"] and model.model_card_data.license == "mit"
    assert {"custom", "st-oblique", "oblique-manifold"} <= set(model.model_card_data.tags)


def test_describe_model_of_a_text_model(text_model):
    info = st_oblique.describe_model(text_model)
    assert (info.num_tokens, info.token_dim, info.embedding_dimension) == (4, 8, 32)
    assert info.similarity_fn_name == "dot" and info.score_range == (-4, 4)
    assert [(tower.modality, tower.backbone, tower.token_source) for tower in info.towers] == [("text", "BertModel", "first")]
    assert info.parameters == sum(p.numel() for p in text_model.parameters())
    assert (info.logit_scale, info.learnable_logit_scale, info.temperature) == (1.0, False, 1.0)  # the default
    assert info.st_oblique_version == st_oblique.__version__
    text = info.to_text()
    assert "4 x 8 (embedding size 32)" in text and re.search(r"^logit_scale +1 \(fixed\)$", text, re.MULTILINE)
    assert json.loads(json.dumps(info.to_dict()))["towers"][0]["token_source"] == "first"


def test_describe_model_with_one_tower_per_route(tiny_bert_dir):
    torch.manual_seed(0)
    query = ClassTokenTransformer(tiny_bert_dir, num_class_tokens=3)
    document = ClassTokenTransformer(tiny_bert_dir)
    router = Router(
        sub_modules={
            "query": [query, ObliquePooling(32, num_tokens=3, token_dim=4, logit_scale=20.0)],
            "document": [document, ObliquePooling(32, num_tokens=3, token_dim=4, token_source="attention")],
        },
    )
    info = st_oblique.describe_model(ObliqueSentenceTransformer(modules=[router]))
    assert [(t.modality, t.token_source) for t in info.towers] == [("query", "first"), ("document", "attention")]
    assert info.towers[0].class_token_placement.startswith("3 class tokens at the front")
    assert info.towers[1].class_token_placement == "the encoder's first token ([CLS]), unmodified"
    assert info.logit_scale == 20.0 and info.temperature == pytest.approx(0.05)
    assert TOKEN_SOURCE_DESCRIPTIONS["attention"].startswith("K learned queries")


def test_describe_model_rejects_models_that_are_not_oblique(tiny_bert_dir):
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    backbone = Transformer(tiny_bert_dir)
    with pytest.raises(ValueError, match="no ObliquePooling"):
        st_oblique.describe_model(SentenceTransformer(modules=[backbone, Pooling(32)]))
    router = Router(
        sub_modules={
            "query": [ClassTokenTransformer(tiny_bert_dir), ObliquePooling(32, num_tokens=2, token_dim=4)],
            "document": [ClassTokenTransformer(tiny_bert_dir), ObliquePooling(32, num_tokens=4, token_dim=4)],
        },
    )
    with pytest.raises(ValueError, match=r"disagree on \(K, d\)"):
        st_oblique.describe_model(SentenceTransformer(modules=[router]))
