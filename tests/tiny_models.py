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
        initializer_range=0.2,  # BERT's 0.02 barely mixes tokens in a 2-layer model: every [CLS] state looks alike
        hidden_dropout_prob=0.0,  # dropout noise swamps an 8-example batch; tests want deterministic training
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def tiny_clip(path: str | Path, seed: int = 0) -> str:
    """Save a 2-layer, 32-wide random Hugging Face CLIP (32 px images, byte-level BPE tokenizer) to ``path``.

    The tokenizer has the 256 byte-level characters, their ``</w>`` forms and a few merges, so any text
    tokenizes offline. Returns the path.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>")]
    vocab_tokens = [*characters, *(c + "</w>" for c in characters), *("".join(m) for m in merges)]
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=32, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


# --- multimodal tiny models (issue 4): HF CLIP, open_clip, timm image towers -----------------------------------


def tiny_clip(path: str | Path, seed: int = 0, max_position_embeddings: int = 32, image_size: int = 32) -> str:
    """Save a tiny random HF ``CLIPModel`` with an offline byte-level BPE tokenizer and image processor to ``path``.

    Vocabulary: the 256 byte-level symbols, their ``</w>`` forms, merges that spell every word of ``WORDS`` and the
    two special tokens (``<|startoftext|>``, ``<|endoftext|>``, which is also the pad token as in OpenAI CLIP).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [symbol + "</w>" for symbol in symbols]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        current = word[0]
        for index, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if index == len(word) - 1 else "")
            merges.append((current, right))
            current += right
            vocab_list.append(current)
    vocab_list = list(dict.fromkeys(vocab_list)) + ["<|startoftext|>", "<|endoftext|>"]
    merges = list(dict.fromkeys(merges))
    tokenizer = CLIPTokenizer(
        vocab={token: index for index, token in enumerate(vocab_list)},
        merges=merges,
        model_max_length=max_position_embeddings,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab_list),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": max_position_embeddings,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A 2-layer open_clip CLIP (ViT with 4x4 patches of 8 px, 16-token context); open_clip's SimpleTokenizer."""


def tiny_open_clip(directory: str | Path, name: str = "st-oblique-tiny-clip") -> str:
    """Register :data:`TINY_OPEN_CLIP_CONFIG` with open_clip under ``name`` (its own ``add_model_config`` API, a JSON
    file written to ``directory``) and return the name, usable as ``open_clip.create_model(name)``."""
    import json

    import open_clip

    config_path = Path(directory) / f"{name}.json"
    config_path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config_path)
    return name


def tiny_timm(path: str | Path, architecture: str = "test_vit", image_size: int = 32, seed: int = 0) -> str:
    """Save a tiny random timm model (timm's ``test_vit`` ViT or ``test_efficientnet`` CNN) as a Hugging Face
    ``timm_wrapper`` checkpoint (model + preprocessing config) to ``path``."""
    from transformers import TimmWrapperConfig, TimmWrapperModel

    preprocessing = {
        "input_size": [3, image_size, image_size],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    model_args = {"img_size": image_size} if "vit" in architecture else None
    torch.manual_seed(seed)
    model = TimmWrapperModel(
        TimmWrapperConfig(architecture=architecture, model_args=model_args, pretrained_cfg=preprocessing)
    )
    model.config.num_features = model.timm_model.num_features  # what from_pretrained of a timm checkpoint records
    model.save_pretrained(path)
    return str(path)


def tiny_images(count: int, size: tuple[int, int] = (40, 48), seed: int = 0) -> list:
    """``count`` random RGB PIL images of ``size`` (height, width), each different."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]


# --- evaluation (issue 5) ------------------------------------------------------------------------------------------


def tiny_oblique_clip(clip_dir: str | Path, num_tokens: int = 4, token_dim: int = 8, seed: int = 0):
    """An oblique image+text ``ObliqueSentenceTransformer`` on a tiny HF CLIP folder (see ``tiny_clip``).

    ST's own ``Transformer`` gives the per-token states of both towers (``last_hidden_state`` through
    ``get_{text,image}_features``) and ``ObliquePooling`` has one attention head per modality.
    """
    from sentence_transformers.sentence_transformer.modules import Transformer

    from st_oblique import ObliquePooling, ObliqueSentenceTransformer

    modality_config = {
        modality: {"method": f"get_{modality}_features", "method_output_name": "last_hidden_state"}
        for modality in ("text", "image")
    }
    backbone = Transformer(str(clip_dir), modality_config=modality_config, module_output_name="token_embeddings")
    config = backbone.model.config
    torch.manual_seed(seed)
    pooling = ObliquePooling(
        {"text": config.text_config.hidden_size, "image": config.vision_config.hidden_size},
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source="attention",
    )
    return ObliqueSentenceTransformer(modules=[backbone, pooling], device="cpu")
