"""The results store: round trip, exactly-once, refusal of a changed space, clear errors on corrupt files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import fake_result, tiny_space_dict

from study.errors import StudyError
from study.schema import CURVE_COLUMNS, TRIAL_COLUMNS, failed_result
from study.space import parse_space
from study.store import ResultsStore


@pytest.fixture
def store(tmp_path, tiny_space) -> ResultsStore:
    store = ResultsStore(tmp_path / "tiny")
    store.begin(tiny_space, engine="fake", space_file="tiny.yaml")
    return store


def test_round_trip_keeps_every_row_and_curve(store, tiny_space) -> None:
    trials = tiny_space.trials()
    store.commit([fake_result(t, 0.7 + 0.05 * i) for i, t in enumerate(trials[:3])])
    store.commit([fake_result(trials[3], 0.9)])
    store.finish(trials_run=4, failed=0)

    fresh = ResultsStore(store.folder)
    table = fresh.trials()
    assert list(table.columns) == list(TRIAL_COLUMNS)
    assert table["trial_key"].tolist() == [t.key for t in trials]
    assert table["test_accuracy"].tolist() == pytest.approx([0.7, 0.75, 0.8, 0.9])
    on_disk = pd.read_csv(store.folder / "trials.csv")
    assert on_disk["trial_key"].tolist() == table["trial_key"].tolist()
    curves = fresh.curves()
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert len(curves) == 4 * 5 and curves.groupby("trial_key")["epoch"].max().eq(5).all()
    manifest = json.loads((store.folder / "manifest.json").read_text())
    assert manifest["fingerprint"] == tiny_space.fingerprint() and manifest["completed_trials"] == 4
    assert manifest["runs"][-1]["finished_at"] and manifest["runs"][-1]["tensorflow_version"]


def test_a_trial_committed_twice_is_kept_once_first_completed_wins(store, tiny_space) -> None:
    trial = tiny_space.trials()[0]
    store.commit([failed_result(trial, "fake", RuntimeError("boom"), 0.1)])
    store.commit([fake_result(trial, 0.6)])
    store.commit([fake_result(trial, 0.9)])  # a late duplicate from another worker
    table = ResultsStore(store.folder).trials()
    assert len(table) == 1
    assert table.loc[0, "status"] == "completed" and table.loc[0, "test_accuracy"] == pytest.approx(0.6)
    assert len(ResultsStore(store.folder).curves()) == 5


def test_failed_trials_are_kept_with_their_error_and_not_counted_done(store, tiny_space) -> None:
    trial = tiny_space.trials()[1]
    store.commit([failed_result(trial, "fake", ValueError("bad shape"), 0.1)])
    table = store.trials()
    assert table.loc[0, "status"] == "failed" and table.loc[0, "error"] == "ValueError: bad shape"
    assert store.completed_keys() == set()


def test_curves_of_an_uncommitted_batch_are_ignored(store, tiny_space) -> None:
    trial = tiny_space.trials()[0]
    orphan = fake_result(trial).curves  # as if killed between writing curves and committing the batch
    orphan.to_parquet(store.curves_dir / "0-orphan.parquet", index=False)
    assert store.curves().empty
    store.commit([fake_result(tiny_space.trials()[1])])
    assert set(store.curves()["trial_key"]) == {tiny_space.trials()[1].key}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"training": {"epochs": 50}}, r"\(training\.epochs 5 -> 50\): that changes what every finished trial means"),
        ({"axes": {"dropout_rate": [0.0, 0.5], "epochs": [5, 10]}}, r"\(axes\.epochs now swept\)"),
        ({"model": {"hidden_units": [16]}}, r"\(model\.hidden_units \[8\] -> \[16\]\)"),
    ],
    ids=["fixed-setting", "training-axis-swept", "model"],
)
def test_a_changed_search_space_is_refused_naming_what_changed(store, tiny_space, overrides, message) -> None:
    changed = parse_space(tiny_space_dict(seeds=3, **overrides))  # more seeds do not make it a growth
    with pytest.raises(StudyError, match=rf"holds results of a different search space {message}.*new `name:`"):
        ResultsStore(store.folder).begin(changed, engine="fake")
    ResultsStore(store.folder).begin(tiny_space, engine="fake")  # the same space resumes


def _grown(store: ResultsStore, tiny_space, **overrides) -> tuple[dict, set[str]]:
    """Finish every trial of the tiny study, grow it, and return the manifest and the keys left to run."""
    store.commit([fake_result(t) for t in tiny_space.trials()])
    grown = parse_space(tiny_space_dict(**overrides))
    fresh = ResultsStore(store.folder)
    fresh.begin(grown, engine="fake", space_file="grown.yaml")
    return fresh.manifest(), {t.key for t in grown.trials()} - fresh.completed_keys()


@pytest.mark.parametrize(
    ("overrides", "added", "n_trials"),
    [
        ({"seeds": 4}, "seeds 2 -> 4", 8),
        ({"axes": {"dropout_rate": [0.0, 0.5, 0.7]}}, "dropout_rate +[0.7]", 6),
        ({"seeds": [0, 1, 7], "axes": {"dropout_rate": [0.0, 0.5], "l2": [0.0, 0.01]}}, "seeds 2 -> 3, l2 +[0.01]", 12),
    ],
    ids=["seeds", "axis-value", "seed-and-new-axis"],
)
def test_a_study_grows_by_seeds_and_axis_values_keeping_every_finished_trial(
    store, tiny_space, overrides, added, n_trials
) -> None:
    manifest, to_run = _grown(store, tiny_space, **overrides)
    grown = parse_space(tiny_space_dict(**overrides))
    assert len(to_run) == n_trials - 4 and {t.key for t in tiny_space.trials()} <= {t.key for t in grown.trials()}
    assert manifest["fingerprint"] == grown.fingerprint() and manifest["n_trials"] == n_trials
    assert manifest["trial_fingerprint"] == grown.trial_fingerprint() == tiny_space.trial_fingerprint()
    assert manifest["space"] == grown.model_dump(mode="json") and manifest["space_file"] == "grown.yaml"
    assert manifest["runs"][-1]["grown_from"] == tiny_space.fingerprint() and manifest["runs"][-1]["added"] == added
    assert "grown_from" not in manifest["runs"][0]
    ResultsStore(store.folder).begin(grown, engine="fake")  # and the grown study resumes as itself
    assert "grown_from" not in ResultsStore(store.folder).manifest()["runs"][-1]


@pytest.mark.parametrize(
    ("overrides", "removed"),
    [
        ({"seeds": [0]}, r"seeds -\[1\]"),
        ({"seeds": 3, "axes": {"dropout_rate": [0.0, 0.7]}}, r"dropout_rate -\[0.5\]"),
    ],
    ids=["seed", "axis-value"],
)
def test_removing_seeds_or_axis_values_is_refused(store, tiny_space, overrides, removed) -> None:
    smaller = parse_space(tiny_space_dict(**overrides))
    with pytest.raises(StudyError, match=rf"holds trials this search space leaves out \({removed}\).*Put them back"):
        ResultsStore(store.folder).begin(smaller, engine="fake")


def test_a_manifest_written_before_trial_fingerprints_still_grows(store, tiny_space) -> None:
    path = store.folder / "manifest.json"
    old = json.loads(path.read_text())
    del old["trial_fingerprint"]
    path.write_text(json.dumps(old))
    manifest, to_run = _grown(store, tiny_space, seeds=3)
    assert len(to_run) == 2 and manifest["runs"][-1]["added"] == "seeds 2 -> 3"
    assert manifest["trial_fingerprint"] == tiny_space.trial_fingerprint()
    old["space"] = {"name": "tiny", "from": "a version that wrote another schema"}  # nothing to compare with
    path.write_text(json.dumps(old))
    with pytest.raises(StudyError, match=r"holds results of a different search space \(its manifest was written"):
        ResultsStore(store.folder).begin(parse_space(tiny_space_dict(seeds=5)), engine="fake")


def test_corrupt_batch_file_is_named_with_the_fix(store, tiny_space) -> None:
    store.commit([fake_result(tiny_space.trials()[0])])
    batch = next(store.batches.glob("*.csv"))
    batch.write_text('garbage\x00,,\n"unterminated\n')
    with pytest.raises(StudyError, match=rf"{batch.name} is corrupt .*delete it and rerun"):
        ResultsStore(store.folder).trials()


def test_corrupt_curves_file_is_named_with_the_fix(store, tiny_space) -> None:
    store.commit([fake_result(tiny_space.trials()[0])])
    part = next(store.curves_dir.glob("*.parquet"))
    part.write_bytes(b"not parquet")
    with pytest.raises(StudyError, match=rf"{part.name} is corrupt"):
        ResultsStore(store.folder).curves()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"], ids=["not-json", "not-an-object"])
def test_corrupt_manifest_is_a_clear_error(store, text: str) -> None:
    (store.folder / "manifest.json").write_text(text)
    with pytest.raises(StudyError, match=r"manifest\.json is corrupt"):
        ResultsStore(store.folder).manifest()


def test_a_folder_without_manifest_is_not_a_study(tmp_path) -> None:
    with pytest.raises(StudyError, match="not a study's results folder"):
        ResultsStore(tmp_path).manifest()
