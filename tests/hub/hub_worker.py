"""Subprocess side of the Hub round-trip test: ``python hub_worker.py push|load WORKDIR``.

huggingface_hub reads ``HF_ENDPOINT`` when it is imported, so everything that talks to the fake Hub runs in a
fresh interpreter started by the test with ``HF_ENDPOINT``/``HF_TOKEN``/``HF_HOME`` set. ``push`` trains two
tiny models, pushes them (and two deliberately incompatible copies) and writes reference embeddings;
``load`` runs in a new process that starts as if st-oblique were not installed (``without_st_oblique/`` on
``PYTHONPATH``): it checks that loading then asks for ``pip install st-oblique``, makes st-oblique available again,
loads every repository by id and writes what it found to ``WORKDIR/loaded.json``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import traceback
from pathlib import Path

import torch

CLIP_REPO = "user/oblique-clip"
TEXT_REPO = "user/oblique-text"
TEXT_BRANCH = "v1"
FUTURE_CONFIG_REPO = "user/oblique-text-future-config"
FUTURE_REQUIREMENT_REPO = "user/oblique-text-future-requirement"
TEXT_LOGIT_SCALE = 12.5
PAIRS = {
    "anchor": ["a man plays the guitar", "two dogs run in the park", "a child eats food", "a cat sits with a ball"],
    "positive": ["a man plays music", "dogs run in a park", "the child eats", "a cat with a red ball"],
}


def build_clip():
    """The tiny oblique CLIP: the backbones' builder when present, else ST's Transformer + ObliquePooling."""
    from tiny_models import tiny_clip, tiny_oblique_clip

    import st_oblique.builders as builders

    clip_dir = tiny_clip(Path(sys.argv[2]) / "tiny_clip")
    if hasattr(builders, "oblique_clip"):
        torch.manual_seed(0)
        return builders.oblique_clip(clip_dir, num_tokens=4, token_dim=8)
    return tiny_oblique_clip(clip_dir, num_tokens=4, token_dim=8)


def train_two_steps(model, dataset, workdir: Path) -> None:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    import st_oblique

    args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir / "trainer"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
        report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
    )
    loss = st_oblique.ObliqueContrastiveLoss(model)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()


def push(workdir: Path) -> None:
    from datasets import Dataset
    from huggingface_hub import HfApi
    from tiny_models import SENTENCES, tiny_bert, tiny_images

    import st_oblique
    from st_oblique.model.push import push_to_hub

    report: dict = {}
    images = tiny_images(8, seed=1)
    clip = build_clip()
    train_two_steps(clip, Dataset.from_dict({"image": images, "text": SENTENCES}), workdir)
    report["clip_url"] = clip.push_to_hub(CLIP_REPO)  # Sentence Transformers' own method
    torch.save(
        {"images": clip.encode(images[:3], convert_to_tensor=True), "texts": clip.encode(SENTENCES, convert_to_tensor=True)},
        workdir / "clip_reference.pt",
    )
    report["clip_logit_scale"] = st_oblique.describe_model(clip).logit_scale

    torch.manual_seed(0)
    text = st_oblique.oblique_text_model(tiny_bert(workdir / "tiny_bert"), num_tokens=4, token_dim=8)
    train_two_steps(text, Dataset.from_dict(PAIRS), workdir)
    text[-1].logit_scale = TEXT_LOGIT_SCALE  # what the st-oblique losses record at the end of training
    text.save(str(workdir / "text_local"))
    results = {"command": "python -m evaluation.run --model text_local", "sts": {"spearman": 0.5}}
    report["text_url"] = push_to_hub(
        workdir / "text_local", TEXT_REPO, private=True, revision=TEXT_BRANCH, evaluation_results=results
    )
    torch.save({"texts": text.encode(SENTENCES, convert_to_tensor=True)}, workdir / "text_reference.pt")

    # Two incompatible copies: a module config from a newer release, and a requirement on a newer st-oblique.
    api = HfApi()
    future = workdir / "future_config"
    shutil.copytree(workdir / "text_local", future)
    config_path = future / "1_ObliquePooling" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(st_oblique_version="9.0.0", token_mixing="sinkhorn")
    config_path.write_text(json.dumps(config))
    api.create_repo(FUTURE_CONFIG_REPO)
    api.upload_folder(repo_id=FUTURE_CONFIG_REPO, folder_path=future)
    requirement = workdir / "future_requirement"
    shutil.copytree(workdir / "text_local", requirement)
    st_config_path = requirement / "config_sentence_transformers.json"
    st_config = json.loads(st_config_path.read_text())
    st_config["requirements"]["st-oblique"]["specifier"] = ">=9.0"
    st_config_path.write_text(json.dumps(st_config))
    api.create_repo(FUTURE_REQUIREMENT_REPO)
    api.upload_folder(repo_id=FUTURE_REQUIREMENT_REPO, folder_path=requirement)
    (workdir / "pushed.json").write_text(json.dumps(report))


def load_without_st_oblique(workdir: Path) -> dict[str, str]:
    """Load the text model (Hub id and local folder) while st-oblique is not installed (see without_st_oblique/)."""
    import sitecustomize
    from sentence_transformers import SentenceTransformer

    try:
        import st_oblique  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise RuntimeError("without_st_oblique/sitecustomize.py is not on PYTHONPATH: st_oblique imported")
    messages = {}
    for name, source, kwargs in [
        ("hub", TEXT_REPO, {"revision": TEXT_BRANCH}),
        ("folder", str(workdir / "text_local"), {}),
    ]:
        try:
            SentenceTransformer(source, trust_remote_code=True, **kwargs)
            messages[name] = "loaded without st-oblique"
        except ImportError as error:
            messages[name] = str(error)
    sitecustomize.unblock()
    return messages


def load(workdir: Path) -> None:
    report: dict = {"without_st_oblique": load_without_st_oblique(workdir)}

    from huggingface_hub import hf_hub_download
    from sentence_transformers import SentenceTransformer
    from tiny_models import SENTENCES, tiny_images

    import st_oblique

    clip = st_oblique.load(CLIP_REPO)
    plain_clip = SentenceTransformer(CLIP_REPO, trust_remote_code=True)
    images = tiny_images(8, seed=1)[:3]
    text = st_oblique.load(TEXT_REPO, revision=TEXT_BRANCH)
    torch.save(
        {
            "clip_images": clip.encode(images, convert_to_tensor=True),
            "clip_texts": clip.encode(SENTENCES, convert_to_tensor=True),
            "plain_clip_texts": plain_clip.encode(SENTENCES, convert_to_tensor=True),
            "text_texts": text.encode(SENTENCES, convert_to_tensor=True),
        },
        workdir / "loaded.pt",
    )
    report["similarity_fn_names"] = [clip.similarity_fn_name, plain_clip.similarity_fn_name, text.similarity_fn_name]
    report["readmes"] = {
        CLIP_REPO: Path(hf_hub_download(CLIP_REPO, "README.md")).read_text(encoding="utf-8"),
        TEXT_REPO: Path(hf_hub_download(TEXT_REPO, "README.md", revision=TEXT_BRANCH)).read_text(encoding="utf-8"),
    }
    report["snippets"] = {}
    for repo, readme in report["readmes"].items():
        code = re.search(r"```python\n(.*?)```", readme, flags=re.DOTALL).group(1)
        if repo == TEXT_REPO:  # the card shows the default branch; this test pushed to a branch
            code = code.replace(f'ObliqueSentenceTransformer("{TEXT_REPO}")', f'ObliqueSentenceTransformer("{TEXT_REPO}", revision="{TEXT_BRANCH}")')
        namespace: dict = {}
        exec(compile(code, f"README snippet of {repo}", "exec"), namespace)
        report["snippets"][repo] = {
            "model_class": type(namespace["model"]).__name__,
            "similarities_shape": list(namespace["similarities"].shape),
            "similarities_max": float(namespace["similarities"].abs().max()),
        }
    report["errors"] = {}
    for repo, kwargs in [
        (FUTURE_CONFIG_REPO, {}),
        (FUTURE_REQUIREMENT_REPO, {}),
        (TEXT_REPO, {"revision": TEXT_BRANCH, "token": False}),
    ]:
        try:
            st_oblique.load(repo, **kwargs)
            report["errors"][repo] = None
        except Exception as error:  # the test checks type and message
            report["errors"][repo] = {"type": type(error).__name__, "message": str(error)}
    (workdir / "loaded.json").write_text(json.dumps(report))


if __name__ == "__main__":
    try:
        {"push": push, "load": load}[sys.argv[1]](Path(sys.argv[2]))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
