"""Tiny random models built from configs, for tests. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = (
    "the a an of on in is are and with to at man woman child dog cat car bike horse guitar food plays runs eats "
    "sits rides red blue green big small street park beach water ball photo picture two three people"
).split()
SENTENCES = [
    "a man plays the guitar",
    "a woman rides a horse on the beach",
    "two dogs run in the park",
    "a child eats food",
    "the red car is on the street",
    "a cat sits with a ball",
    "three people ride bikes in the park",
    "a big blue ball is in the water",
]


def tiny_bert(path: str | Path, seed: int = 0, max_position_embeddings: int = 64) -> str:
    """Save a 2-layer, 32-wide random BERT with a word-level tokenizer to ``path``; returns the path."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
