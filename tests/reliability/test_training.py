"""Training in Python with ObliqueTrainer: bad datasets and foreign checkpoints are refused before the first step
naming the dataset, column and row; datasets are not modified; an interrupted run leaves no half-written
checkpoint."""

from __future__ import annotations

import logging

import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainingArguments
from tiny_models import SENTENCES

import st_oblique
from st_oblique.errors import CheckpointError, TrainingDataError

PAIRS = {"anchor": SENTENCES, "positive": SENTENCES[1:] + SENTENCES[:1]}


def arguments(output_dir, **extra):
    options = dict(output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=2, report_to=[],
                   save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    options.update(extra)
    return SentenceTransformerTrainingArguments(**options)


@pytest.fixture
def model(saved_model):
    return st_oblique.load(str(saved_model.path))


def trainer(model, dataset, output_dir, **extra):
    return st_oblique.ObliqueTrainer(model=model, args=arguments(output_dir, **extra), train_dataset=dataset,
                                     loss=st_oblique.ObliqueContrastiveLoss(model))


BAD = {
    "empty dataset": (Dataset.from_dict({"anchor": [], "positive": []}), "train_dataset has no rows"),
    "None in a column": (
        Dataset.from_dict({"anchor": [*SENTENCES[:3], None, *SENTENCES[4:]], "positive": PAIRS["positive"]}),
        "Row 3 of train_dataset has no value (None) in column 'anchor'"),
    "None in the last row of the positives": (
        Dataset.from_dict({"anchor": SENTENCES, "positive": [*PAIRS["positive"][:7], None]}),
        "Row 7 of train_dataset has no value (None) in column 'positive'"),
    "an extra integer column": (
        Dataset.from_dict({**PAIRS, "idx": list(range(8))}),
        "Column 'idx' of train_dataset holds int64 values, which ObliqueContrastiveLoss would take as an input"),
    "an extra float column": (
        Dataset.from_dict({**PAIRS, "weight": [0.5] * 8}), "Column 'weight' of train_dataset holds float64 values"),
    "an extra boolean column": (
        Dataset.from_dict({**PAIRS, "keep": [True] * 8}), "Column 'keep' of train_dataset holds bool values"),
    "a single input column": (
        Dataset.from_dict({"anchor": SENTENCES, "label": [1.0] * 8}),
        "train_dataset has the input column(s) ['anchor']; ObliqueContrastiveLoss needs two"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_dataset_refused_before_training(case, model, tmp_path):
    dataset, expected = BAD[case]
    fingerprint = dataset._fingerprint
    with pytest.raises(TrainingDataError) as raised:
        trainer(model, dataset, tmp_path / "out")
    assert expected in str(raised.value), str(raised.value)
    assert dataset._fingerprint == fingerprint
    assert not (tmp_path / "out").exists()


def test_none_in_a_dataset_dict_names_the_dataset(model, tmp_path):
    from datasets import DatasetDict

    data = DatasetDict({"nli": Dataset.from_dict(PAIRS), "qa": Dataset.from_dict({"anchor": ["a", None], "positive": ["b", "c"]})})
    with pytest.raises(TrainingDataError, match=r"Row 1 of train_dataset\['qa'\] has no value \(None\) in column 'anchor'"):
        st_oblique.ObliqueTrainer(model=model, args=arguments(tmp_path / "o"), train_dataset=data,
                                  loss=st_oblique.ObliqueContrastiveLoss(model))


def test_extra_text_column_is_announced_as_hard_negatives(model, tmp_path, caplog):
    dataset = Dataset.from_dict({**PAIRS, "source": ["web"] * 8})
    with caplog.at_level(logging.WARNING, logger="st_oblique.training.trainer"):
        trainer(model, dataset, tmp_path / "out")
    assert "'anchor' as anchors, 'positive' as positives and 'source' as hard negatives" in caplog.text


def test_label_column_is_not_an_input(model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="st_oblique.training.trainer"):
        trainer(model, Dataset.from_dict({**PAIRS, "label": [1] * 8}), tmp_path / "out")
    assert "hard negatives" not in caplog.text


@pytest.fixture(scope="module")
def checkpoint_run(saved_model, tmp_path_factory):
    """A 2-step run with a checkpoint per step, of the K=4 model."""
    output = tmp_path_factory.mktemp("checkpoint_run") / "out"
    model = st_oblique.load(str(saved_model.path))
    trainer(model, Dataset.from_dict(PAIRS), output, save_strategy="steps", save_steps=1).train()
    return output


def test_resume_from_another_models_checkpoint(checkpoint_run, tiny_bert_dir, tmp_path):
    from reliability.reliability_helpers import digest

    before = digest(checkpoint_run)
    other = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=2, token_dim=8)
    run = trainer(other, Dataset.from_dict(PAIRS), tmp_path / "out")
    with pytest.raises(CheckpointError) as raised:
        run.train(resume_from_checkpoint=str(checkpoint_run / "checkpoint-2"))
    message = str(raised.value)
    assert "it holds another model: 1_ObliquePooling/model.safetensors has 'heads.default.projection' of shape (4, 32, 8)" in message
    assert "module 1 (ObliquePooling) has (2, 32, 8)" in message
    assert digest(checkpoint_run) == before


def test_a_plain_trainer_resuming_from_another_models_checkpoint_is_told_which_tensor_differs(
    checkpoint_run, tiny_bert_dir, tmp_path
):
    """Sentence Transformers loads the checkpoint as a model and copies its state into the model being trained: the
    model's load_state_dict says what differs (was torch's 'size mismatch for 1.heads.default.projection...')."""
    from reliability.reliability_helpers import digest
    from sentence_transformers import SentenceTransformerTrainer

    before = digest(checkpoint_run)
    other = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=2, token_dim=8)
    run = SentenceTransformerTrainer(model=other, args=arguments(tmp_path / "out"), train_dataset=Dataset.from_dict(PAIRS),
                                     loss=st_oblique.ObliqueContrastiveLoss(other))
    with pytest.raises(CheckpointError) as raised:
        run.train(resume_from_checkpoint=str(checkpoint_run / "checkpoint-2"))
    message = str(raised.value)
    assert "These weights come from another model" in message
    assert "'1.heads.default.projection' has shape (4, 32, 8) there and (2, 32, 8) here" in message
    assert "pass a checkpoint written by this model's run, or train without it" in message
    assert digest(checkpoint_run) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_resume_true_without_checkpoints(model, tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint to resume from in"):
        trainer(model, Dataset.from_dict(PAIRS), tmp_path / "empty").train(resume_from_checkpoint=True)


def test_resume_from_a_half_written_checkpoint(model, checkpoint_run, tmp_path):
    import shutil

    half = tmp_path / "checkpoint-9"
    shutil.copytree(checkpoint_run / "checkpoint-2", half)
    (half / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match=r"is not a complete training checkpoint \(no trainer_state.json\)"):
        trainer(model, Dataset.from_dict(PAIRS), tmp_path / "out").train(resume_from_checkpoint=str(half))


def test_resume_from_a_missing_checkpoint(model, tmp_path):
    with pytest.raises(CheckpointError, match="Checkpoint not found"):
        trainer(model, Dataset.from_dict(PAIRS), tmp_path / "out").train(resume_from_checkpoint=str(tmp_path / "nope"))


def test_interrupted_checkpoint_is_removed(model, tmp_path):
    """KeyboardInterrupt while a checkpoint is being written: the half-written checkpoint and the output folder the
    run created are removed."""
    run = trainer(model, Dataset.from_dict(PAIRS), tmp_path / "out", save_strategy="steps", save_steps=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run._save_rng_state = interrupted  # this instance only: after the weights, before trainer_state.json
    with pytest.raises(KeyboardInterrupt):
        run.train()
    assert not (tmp_path / "out").exists()


def test_interrupt_keeps_complete_checkpoints(model, tmp_path):
    run = trainer(model, Dataset.from_dict(PAIRS), tmp_path / "out", save_strategy="steps", save_steps=1, max_steps=3)
    original = run._save_rng_state

    def second_save_interrupted(output_dir, *args, **kwargs):
        if output_dir.endswith("checkpoint-2"):
            raise KeyboardInterrupt
        return original(output_dir, *args, **kwargs)

    run._save_rng_state = second_save_interrupted
    with pytest.raises(KeyboardInterrupt):
        run.train()
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["checkpoint-1"]
    assert (tmp_path / "out" / "checkpoint-1" / "trainer_state.json").is_file()


# -- a plain SentenceTransformerTrainer: the model card data checks the datasets ---------------------------------


def plain_trainer(model, dataset, output_dir, **extra):
    from sentence_transformers import SentenceTransformerTrainer

    return SentenceTransformerTrainer(model=model, args=arguments(output_dir, **extra), train_dataset=dataset,
                                      loss=st_oblique.ObliqueContrastiveLoss(model))


@pytest.mark.parametrize("case", [case for case in BAD if case != "empty dataset"])
def test_plain_trainer_refuses_bad_dataset_before_training(case, model, tmp_path):
    """Sentence Transformers' card callback hands every trainer's datasets to ObliqueModelCardData, which runs the
    checks ObliqueTrainer runs (an empty dataset never reaches it: the callback skips empty datasets)."""
    dataset, expected = BAD[case]
    fingerprint = dataset._fingerprint
    with pytest.raises(TrainingDataError) as raised:
        plain_trainer(model, dataset, tmp_path / "out")
    assert expected in str(raised.value), str(raised.value)
    assert dataset._fingerprint == fingerprint
    # transformers' Trainer creates args.output_dir in its constructor; nothing is written into it
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_plain_trainer_refuses_bad_eval_dataset(model, tmp_path):
    from sentence_transformers import SentenceTransformerTrainer

    bad = Dataset.from_dict({"anchor": ["a", None], "positive": ["b", "c"]})
    with pytest.raises(TrainingDataError, match=r"Row 1 of eval_dataset has no value \(None\) in column 'anchor'"):
        SentenceTransformerTrainer(model=model, args=arguments(tmp_path / "out"), train_dataset=Dataset.from_dict(PAIRS),
                                   eval_dataset=bad, loss=st_oblique.ObliqueContrastiveLoss(model))


def test_plain_trainer_announces_hard_negatives(model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="st_oblique.training.trainer"):
        plain_trainer(model, Dataset.from_dict({**PAIRS, "source": ["web"] * 8}), tmp_path / "out")
    assert "'source' as hard negatives" in caplog.text


def test_oblique_trainer_announces_hard_negatives_once(model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="st_oblique.training.trainer"):
        trainer(model, Dataset.from_dict({**PAIRS, "source": ["web"] * 8}), tmp_path / "out")
    assert caplog.text.count("'source' as hard negatives") == 1


def test_check_training_dataset_still_importable_from_trainer():
    from st_oblique.data.training_data_checks import check_training_dataset as moved
    from st_oblique.training.trainer import check_training_dataset

    assert check_training_dataset is moved
