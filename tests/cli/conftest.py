"""Fixtures of the ``st-oblique`` command tests: tiny backbones and data files (nothing is downloaded), a way to run
the command in-process, and a few trained runs shared by the tests of a session."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from cli.cli_helpers import TINY, Assets, CliResult, demo_args, run_main
from tiny_models import (
    SENTENCES,
    TINY_OPEN_CLIP_CONFIG,
    tar_add,
    tiny_clip,
    tiny_data_root,
    tiny_image_caption_dataset,
    tiny_images,
    tiny_png,
    tiny_timm,
)


@pytest.fixture
def cli(capsys):
    """Run ``st-oblique ARGS`` in this process; returns (exit status, stdout, stderr)."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = run_main(*args)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def assets(tmp_path_factory, tiny_bert_dir) -> Assets:
    root = tmp_path_factory.mktemp("cli_assets")
    open_clip_config = root / "tiny-open-clip.json"
    open_clip_config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))

    pairs = root / "pairs.tsv"
    rows = [f"{first}\t{second}" for first, second in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True)]
    pairs.write_text("anchor\tpositive\n" + "\n".join(rows) + "\n")

    images = tiny_images(6, size=(32, 32), seed=3)
    captions = root / "captions.tsv"
    lines = ["image\tcaption_idx\tcaption"]
    for index in range(6):
        lines += [f"{index}.png\t0\t{SENTENCES[index]}", f"{index}.png\t1\t{SENTENCES[(index + 2) % 8]}"]
    captions.write_text("\n".join(lines) + "\n")
    images_tar, broken_tar, images_folder = root / "images.tar", root / "broken.tar", root / "images"
    images_folder.mkdir()
    with tarfile.open(images_tar, "w") as good, tarfile.open(broken_tar, "w") as broken:
        for index, image in enumerate(images):
            tar_add(good, f"photos/{index}.png", tiny_png(image))
            tar_add(broken, f"photos/{index}.png", b"not an image" if index == 3 else tiny_png(image))
            image.save(images_folder / f"{index}.png")

    hf_dataset = root / "hf_dataset"
    tiny_image_caption_dataset(8).save_to_disk(str(hf_dataset))
    return Assets(
        bert=tiny_bert_dir,
        clip=tiny_clip(root / "clip"),
        vit=tiny_timm(root / "vit", "test_vit", image_size=32),
        open_clip_config=open_clip_config,
        pairs=pairs,
        captions=captions,
        images_tar=images_tar,
        images_folder=images_folder,
        broken_tar=broken_tar,
        hf_dataset=hf_dataset,
        data_root=tiny_data_root((root / "data").mkdir() or root / "data"),
    )


@pytest.fixture(scope="session")
def text_run(assets, tmp_path_factory) -> Path:
    """A tiny text model trained on text pairs with a learned scale and checkpoints (``<run>-checkpoints``)."""
    output = tmp_path_factory.mktemp("text_run") / "run"
    code = run_main(
        "train", "--backbone", "text", "--model", assets.bert, "--pairs", assets.pairs, *TINY,
        "--max-steps", 4, "--save-steps", 2, "--learning-rate", 1e-2, "--scale-mode", "learnable",
        "--scale-learning-rate", 0.05, "--logging-steps", 1, "--output-dir", output,
    )
    assert code == 0
    return output


@pytest.fixture(scope="session")
def image_run(assets, tmp_path_factory) -> Path:
    """A tiny open_clip model (custom architecture file) trained on a caption table + tar, evaluated before and
    after training on tiny Imagenette and Flickr files."""
    output = tmp_path_factory.mktemp("image_run") / "run"
    code = run_main(
        "train", "--backbone", "open_clip", "--open-clip-config", assets.open_clip_config,
        "--captions", assets.captions, "--images", assets.images_tar, *TINY, "--max-steps", 3,
        "--learning-rate", 1e-3, "--scale-mode", "learnable", "--logging-steps", 1,
        "--eval-dataset", "imagenette", "--eval-dataset", "flickr8k_1k", "--data-root", assets.data_root,
        "--eval-untrained", "--output-dir", output,
    )
    assert code == 0
    return output


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, CliResult]:
    """The README's first command, ``st-oblique demo``, with few steps (``--quick``), run once per session in an
    empty working folder: returns its default output folder ``<folder>/st-oblique-demo`` and what it printed."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("readme")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_main(*demo_args(["demo"]))
    return folder / "st-oblique-demo", CliResult(code, out.getvalue(), err.getvalue())
