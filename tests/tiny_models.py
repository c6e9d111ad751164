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


def tiny_clip_uneven(path: str | Path, seed: int = 0, max_position_embeddings: int = 32, image_size: int = 32) -> str:
    """Save a tiny random HF ``CLIPModel`` whose towers have uneven widths (text 32, vision 48, so a mix-up of the
    towers fails), with an offline byte-level BPE tokenizer and image processor, to ``path``.

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
    vocab_list = [*dict.fromkeys(vocab_list), "<|startoftext|>", "<|endoftext|>"]
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


def tiny_image_caption_dataset(count: int = 8):
    """A ``datasets.Dataset`` with an ``Image()`` column of random photos and a caption column (``SENTENCES``)."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    captions = [SENTENCES[index % len(SENTENCES)] for index in range(count)]
    return Dataset.from_dict(
        {"image": tiny_images(count), "caption": captions},
        features=Features({"image": ImageFeature(), "caption": Value("string")}),
    )


def train_steps(model, dataset, output_dir: str | Path, steps: int = 2, batch_size: int = 4, learning_rate: float = 1e-2):
    """Run ST's trainer for ``steps`` steps with ``ObliqueContrastiveLoss`` (no router_mapping); returns the trainer."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    import st_oblique

    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, max_steps=steps,
        learning_rate=learning_rate, report_to=[], save_strategy="no", use_cpu=True, seed=0, logging_steps=1,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=st_oblique.ObliqueContrastiveLoss(model)
    )
    trainer.train()
    return trainer


def oblique_tokens(model, inputs) -> torch.Tensor:
    """The ``(N, K, d)`` oblique embeddings of ``inputs``."""
    return torch.stack([row["oblique_embeddings"] for row in model.encode(inputs, output_value=None)])


def tiny_png(image) -> bytes:
    """The PNG encoding of a PIL image."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tar_add(archive, name: str, data: bytes) -> None:
    """Add ``data`` as a regular file ``name`` to an open ``tarfile.TarFile``."""
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


IMAGENETTE_WNIDS = ["n01440764", "n02102040", "n02979186"]  # tench, English springer spaniel, cassette player
FLICKR_CAPTIONS = {
    "1001_a.jpg": ["a dog runs in the park", "a brown dog plays", "the dog is on grass"],
    "1002_b.jpg": ["a man plays the guitar", "someone with a guitar"],
    "1003_c.jpg": ["two children eat food"],
    "1004_d.jpg": ["a red car on the street", "a car parked", "a red car"],
    "1005_e.jpg": ["a woman rides a horse on the beach", "a horse on sand"],
    "1006_f.jpg": ["a cat sits with a ball", "a cat"],
}


def tiny_data_root(root: str | Path) -> Path:
    """Write tiny versions of the evaluation sets in ``root``, laid out like ``../shared/data`` (real file formats,
    random content): Imagenette tar (3 classes x 2), Flickr8k captions + tar (6 images), Fashion-MNIST IDX (10),
    STS Benchmark, SICK and a BEIR SciFact. Returns ``root``."""
    import gzip
    import json
    import tarfile

    import numpy as np

    root = Path(root)
    images = tiny_images(12, size=(24, 30), seed=7)

    (root / "imagenette").mkdir()
    with tarfile.open(root / "imagenette" / "imagenette_val_224.tar", "w") as archive:
        for index, image in enumerate(images[:6]):
            tar_add(archive, f"val/{IMAGENETTE_WNIDS[index % 3]}/{IMAGENETTE_WNIDS[index % 3]}_{index}.png", tiny_png(image))

    flickr = root / "flickr8k_1k"
    flickr.mkdir()
    with open(flickr / "captions.tsv", "w", encoding="utf-8") as handle:
        handle.write("image\tcaption_idx\tcaption\n")
        for name, captions in FLICKR_CAPTIONS.items():
            for index, caption in reversed(list(enumerate(captions))):  # out of order: the reader sorts by index
                handle.write(f"{name}\t{index}\t{caption}\n")
    with tarfile.open(flickr / "flickr8k_1k_images_256.tar", "w") as archive:
        for name, image in zip(FLICKR_CAPTIONS, images[6:], strict=False):
            tar_add(archive, f"images_256/{name}", tiny_png(image))

    fashion = root / "fashion_mnist"
    fashion.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    with gzip.open(fashion / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28)) + pixels.tobytes())
    with gzip.open(fashion / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(range(10)))

    sts = root / "stsbenchmark" / "stsbenchmark"
    sts.mkdir(parents=True)
    with open(sts / "sts-test.csv", "w", encoding="utf-8") as handle:
        for index, (first, second) in enumerate(zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True)):
            extra = "\tsource-extra" if index % 2 else ""  # some original lines carry extra fields
            handle.write(f"main-captions\tMSRvid\t2012test\t{index:04d}\t{index % 5 + 0.5}\t{first}\t{second}{extra}\n")

    sick = root / "sick2014"
    sick.mkdir()
    for file_index, name in enumerate(("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt")):
        with open(sick / name, "w", encoding="utf-8") as handle:
            handle.write("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n")
            for index in range(3):
                first, second = SENTENCES[(file_index + index) % 8], SENTENCES[(file_index + 2 * index + 1) % 8]
                handle.write(f"{file_index * 10 + index}\t{first}\t{second}\t{1 + (index + file_index) % 5}\tNEUTRAL\n")

    scifact = root / "scifact_beir"
    (scifact / "qrels").mkdir(parents=True)
    with open(scifact / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for index, sentence in enumerate(SENTENCES):
            handle.write(json.dumps({"_id": f"{100 + index}", "title": "", "text": sentence}) + "\n")
    with open(scifact / "queries.jsonl", "w", encoding="utf-8") as handle:
        for index, sentence in enumerate(SENTENCES):
            handle.write(json.dumps({"_id": str(index), "text": sentence}) + "\n")
    with open(scifact / "qrels" / "test.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for index in range(0, 8, 2):  # even queries are test queries; their relevant doc holds the same sentence
            handle.write(f"{index}\t{100 + index}\t1\n")
    return root


def assert_class_tokens_see_their_input(model, patch_box: tuple[int, int, int, int], num_tokens: int) -> None:
    """Every one of the K text (image) class tokens changes with the caption (image), down to its last word (patch).

    Two captions that differ only in their last word, and two 32x32 images that differ only inside ``patch_box``
    (the last patch), must differ in every token; and no token may be constant across inputs. In a causal text
    tower this holds only for class positions after the caption.
    """
    texts = oblique_tokens(model, ["a man plays the guitar", "a man plays the ball", *SENTENCES])
    first = tiny_images(1, size=(32, 32), seed=1)[0]
    changed = first.copy()
    changed.paste((255, 0, 0), patch_box)
    images = oblique_tokens(model, [first, changed, *tiny_images(4)])
    for tokens in (texts, images):
        assert tokens.shape[1] == num_tokens
        assert bool(((tokens[0] - tokens[1]).norm(dim=-1) > 1e-4).all()), "a class token ignores the end of its input"
        assert bool((tokens.std(dim=0).norm(dim=-1) > 1e-3).all()), "a class token is constant across inputs"
