from __future__ import annotations

import pytest
import torch
from sentence_transformers.sentence_transformer.modules import Transformer
from tiny_models import SENTENCES, tiny_bert
from transformers import GPT2Config, GPT2Model

from st_oblique.modules.class_token_transformer import ClassTokenTransformer, prepend_class_tokens


def token_states(module, texts, **kwargs):
    features = module.preprocess(texts, **kwargs)
    with torch.no_grad():
        return module(dict(features))


def test_one_class_token_is_exactly_the_stock_transformer(tiny_bert_dir):
    stock = Transformer(tiny_bert_dir).eval()
    ours = ClassTokenTransformer(tiny_bert_dir, num_class_tokens=1).eval()
    stock_features, our_features = token_states(stock, SENTENCES), token_states(ours, SENTENCES)
    assert torch.equal(stock_features["input_ids"], our_features["input_ids"])
    assert torch.equal(stock_features["token_embeddings"], our_features["token_embeddings"])


def test_class_tokens_are_prepended_with_masks_and_types(tiny_bert_dir):
    module = ClassTokenTransformer(tiny_bert_dir, num_class_tokens=4)
    stock = Transformer(tiny_bert_dir).preprocess(SENTENCES[:3])
    features = module.preprocess(SENTENCES[:3])
    cls_id = module.tokenizer.cls_token_id
    assert (features["input_ids"][:, :4] == cls_id).all()
    assert torch.equal(features["input_ids"][:, 3:], stock["input_ids"])
    assert torch.equal(features["attention_mask"][:, 3:], stock["attention_mask"])
    assert (features["attention_mask"][:, :3] == 1).all()
    assert features["token_type_ids"].shape == features["input_ids"].shape


def test_class_token_states_differ_and_depend_on_the_text(tiny_bert_dir):
    module = ClassTokenTransformer(tiny_bert_dir, num_class_tokens=4).eval()
    states = token_states(module, SENTENCES[:2])["token_embeddings"][:, :4]  # (2, K, H)
    pairwise = torch.cdist(states[0], states[0])
    assert (pairwise + torch.eye(4) * 1e9).min() > 1e-3  # the K class states are distinct
    assert ((states[0] - states[1]).norm(dim=-1) > 1e-3).all()  # and each depends on the sentence


def test_lengths_never_overflow_the_position_table(tmp_path):
    path = tiny_bert(tmp_path / "bert16", max_position_embeddings=16)
    module = ClassTokenTransformer(path, num_class_tokens=6)
    long_text = " ".join(["the man plays the guitar"] * 20)
    features = module.preprocess([long_text, "a dog"])
    assert features["input_ids"].shape[1] == 16  # 11 text tokens ([CLS] ... [SEP]) + 5 copies
    assert features["input_ids"][0, 15].item() == module.tokenizer.sep_token_id
    module.max_seq_length = 8
    assert module.preprocess([long_text])["input_ids"].shape[1] == 8 + 5
    with torch.no_grad():
        module(module.preprocess([long_text]))  # runs without index errors
    with pytest.raises(ValueError, match="does not fit"):
        ClassTokenTransformer(path, num_class_tokens=16)


def test_prompt_length_moves_with_the_class_tokens():
    features = {"input_ids": torch.tensor([[2, 5, 3]]), "attention_mask": torch.ones(1, 3), "prompt_length": 2}
    out = prepend_class_tokens(features, 3)
    assert out["prompt_length"] == 5
    assert out["input_ids"].tolist() == [[2, 2, 2, 2, 5, 3]]
    with pytest.raises(ValueError, match="right-padded"):
        prepend_class_tokens({"input_ids": torch.tensor([[0, 2]]), "attention_mask": torch.tensor([[0, 1]])}, 1)


def test_causal_models_are_refused(tmp_path, tiny_bert_dir):
    GPT2Model(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="causal"):
        ClassTokenTransformer(str(tmp_path), num_class_tokens=4)
    ClassTokenTransformer(str(tmp_path), num_class_tokens=1)  # K=1 changes nothing, so it is allowed


def test_save_and_load_keep_the_class_tokens(tiny_bert_dir, tmp_path):
    module = ClassTokenTransformer(tiny_bert_dir, num_class_tokens=5).eval()
    module.save(str(tmp_path))
    loaded = ClassTokenTransformer.load(str(tmp_path)).eval()
    assert loaded.num_class_tokens == 5
    assert "5 class tokens" in loaded.class_token_placement["text"]
    assert "ClassTokenTransformer(" in repr(loaded)
    torch.testing.assert_close(
        token_states(module, SENTENCES)["token_embeddings"], token_states(loaded, SENTENCES)["token_embeddings"]
    )
    with pytest.raises(ValueError, match="positive whole number"):
        ClassTokenTransformer(tiny_bert_dir, num_class_tokens=0)
