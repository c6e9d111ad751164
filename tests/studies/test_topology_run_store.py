"""Run records and derived values are reused only for the same specification, and derived values are not runs."""

from __future__ import annotations

from evaluation.studies.run_store import RunStore


def test_runs_are_reused_for_the_same_spec_and_counted(tmp_path):
    store = RunStore(tmp_path / "runs")
    calls = []

    def run():
        calls.append(1)
        return {"metrics": {"val": len(calls)}}

    spec = {"regime": "A", "phase": "main", "arm": "sphere", "seed": 0}
    first = store.get_or_run(spec, run)
    again = store.get_or_run(spec, run)
    assert len(calls) == 1 and again["metrics"] == first["metrics"] == {"val": 1}
    assert (store.ran, store.reused) == (1, 1)
    store.get_or_run({**spec, "seed": 1}, run)
    assert len(calls) == 2 and (store.ran, store.reused) == (2, 1)
    assert RunStore(tmp_path / "runs", rerun=True).get_or_run(spec, run)["metrics"] == {"val": 3}


def test_derived_values_are_stored_beside_the_runs_but_are_not_runs(tmp_path):
    store = RunStore(tmp_path / "runs")
    calls = []

    def compute():
        calls.append(1)
        return {"variance_kept": 0.5, "shape": [49, 1280]}

    spec = {"regime": "A", "budget": {"pca_dim": 128}}
    assert store.get_or_compute("notes", spec, compute) == {"variance_kept": 0.5, "shape": [49, 1280]}
    reopened = RunStore(tmp_path / "runs")
    assert reopened.get_or_compute("notes", spec, compute) == {"variance_kept": 0.5, "shape": [49, 1280]}
    assert len(calls) == 1
    reopened.get_or_compute("notes", {"regime": "A", "budget": {"pca_dim": 64}}, compute)
    assert len(calls) == 2
    assert (store.ran, store.reused, reopened.ran, reopened.reused) == (0, 0, 0, 0)
    assert reopened.stored(lambda spec: True) == []  # never mistaken for a run record
