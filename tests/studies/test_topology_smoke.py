"""The whole topology study end to end in --smoke mode (tiny subsets of the real data; regime C's synthetic scenes;
CI, under 3 minutes)."""

from __future__ import annotations

import json
import time

import pytest

from evaluation.studies.topology import DEFAULT_CONFIG, load_config, main

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def test_smoke_run_writes_every_arm_tables_and_plots(shared, tmp_path):
    output = tmp_path / "topology"
    start = time.monotonic()
    argv = [
        "--config",
        str(DEFAULT_CONFIG),
        "--smoke",
        "--output-dir",
        str(output),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--shared-dir",
        str(shared),
    ]
    assert main(argv) == 0
    first_seconds = time.monotonic() - start
    config = load_config(DEFAULT_CONFIG, smoke=True)
    records = [json.loads(path.read_text()) for path in (output / "runs").glob("*.json")]
    a = [r for r in records if r["spec"]["regime"] == "A"]
    b = [r for r in records if r["spec"]["regime"] == "B"]
    c = [r for r in records if r["spec"]["regime"] == "C"]
    assert c and all(path.name.startswith("C_") for path in (output / "runs").glob("C*.json"))
    assert {r["spec"]["arm"] for r in c if r["spec"]["phase"] == "main"} == set(config["regime_c"]["arms"])
    arms_a = set(config["regime_a"]["arms"])
    assert {r["spec"]["arm"] for r in a if r["spec"]["phase"] == "main"} == arms_a
    assert {r["spec"]["arm"] for r in b} == set(config["regime_b"]["arms"])
    # Every arm was tried at every learning rate of the grid, on the validation split only.
    selection = [r for r in a if r["spec"]["phase"] == "select"]
    assert len(selection) == len(arms_a) * len(config["regime_a"]["lr_selection"]["grid"])
    assert all(set(r["metrics"]) == {"val"} for r in selection)
    # Paired design: in one seed, every arm saw the same noisy captions (one shared table per noise level).
    noisy = [r for r in a if r["spec"]["noise_fraction"] == 0.3]
    assert {round(r["noise_fraction_realized"], 6) for r in noisy} == {round(noisy[0]["noise_fraction_realized"], 6)}
    assert 0.25 < noisy[0]["noise_fraction_realized"] < 0.35
    for r in b:
        assert set(r["metrics"]) == set(config["regime_b"]["tasks"])
    results = (output / "results.md").read_text()
    assert "## Regime C" in results
    for arm in arms_a | set(config["regime_b"]["arms"]) | set(config["regime_c"]["arms"]):
        assert f"`{arm}`" in results
    assert "Paired differences" in results and "noise meter" in results and "### Headline" in results
    for a_arm, b_arm in config["regime_b"]["comparisons"]:  # arm-against-arm rows of regime B (late class tokens)
        assert f"`{a_arm}` − `{b_arm}`" in results
    for plot in ("regime_a_retrieval.png", "regime_a_zeroshot.png", "noise_meter.png", "regime_b.png"):
        assert (output / plot).stat().st_size > 1000
    summary = json.loads((output / "summary.json").read_text())
    assert summary["runs_executed"] == len(records) and summary["smoke"] is True
    assert first_seconds < 180

    # Running the command again reuses every stored run and rewrites the tables ...
    (output / "results.md").unlink()
    assert main([*argv, "--regime", "A"]) == 0
    again = json.loads((output / "summary.json").read_text())
    assert again["runs_executed"] == 0 and again["runs_reused"] >= len(a)
    # ... without computing or loading the tower outputs: the data notes come from the stored runs' folder.
    assert "regime_a_cache_seconds" not in again["timings"]
    assert again["timings"]["regime_a_data_notes"] == summary["timings"]["regime_a_data_notes"]
    assert "`oblique16_fixed1`" in (output / "results.md").read_text()
