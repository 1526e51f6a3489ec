"""Model search: the validation split, pinned hyperparameters, ALS and its own weighting, the blend, a stopped
search, and the recorded choice measured again by ``python -m ml.evaluate --search``."""

from __future__ import annotations

import dataclasses
import json
import signal

import numpy as np
import pytest

import ml.artifact
import ml.evaluate
from ml.als import train_als
from ml.blend import blend
from ml.evaluate import evaluate_search, temporal_split
from ml.families import train_model
from ml.features import build_features
from ml.model_config import (
    FAMILIES,
    AlsSettings,
    ModelConfig,
    effective_config,
    read_search,
    summary,
    write_search,
)
from ml.search import Progress, interrupted_record, main, run_search, validation_split
from ml.settings import TrainingSettings, pinned_fields
from ml.training import fit, interaction_weights
from testing.factories import planted_dataset

FAST = TrainingSettings(components=8, epochs=5, num_threads=1, half_life_days=0.0)
ALS = AlsSettings(factors=8, iterations=5)


@pytest.fixture(scope="module")
def dataset():
    return planted_dataset(num_users=120, num_items=90, per_user=12)


def _pairs(users, items, num_items):
    return set((np.asarray(users, dtype=np.int64) * num_items + items).tolist())


def test_validation_split_is_cut_from_the_holdouts_train_part_only(dataset):
    holdout = temporal_split(dataset)
    validation = validation_split(holdout)
    n = dataset.num_items
    holdout_test = _pairs(holdout.test_user, holdout.test_item, n)
    assert holdout_test and len(validation.test_user)
    validation_train = _pairs(validation.train.inter_user, validation.train.inter_item, n)
    validation_test = _pairs(validation.test_user, validation.test_item, n)
    assert not holdout_test & validation_train
    assert not holdout_test & validation_test
    assert validation_test <= _pairs(holdout.train.inter_user, holdout.train.inter_item, n)


def test_the_search_never_learns_from_the_gating_holdout(dataset):
    """Moving every holdout test interaction to another post (same user, same time) changes no trial's
    validation figure, as it would if the search trained or scored on them; the holdout comparison sees it."""
    holdout = temporal_split(dataset)
    n = dataset.num_items
    keys = dataset.inter_user.astype(np.int64) * n + dataset.inter_item
    on_test = ~np.isin(keys, list(_pairs(holdout.train.inter_user, holdout.train.inter_item, n)))
    assert on_test.any()
    rng = np.random.default_rng(0)
    items = dataset.inter_item.copy()
    for user in np.unique(dataset.inter_user[on_test]):
        mine = dataset.inter_user == user
        moved = np.unique(dataset.inter_item[mine & on_test])
        free = rng.permutation(np.setdiff1d(np.arange(n), dataset.inter_item[mine]))[: len(moved)]
        for old, new in zip(moved, free, strict=True):
            items[mine & on_test & (dataset.inter_item == old)] = new
    changed = dataclasses.replace(dataset, inter_item=items.astype(dataset.inter_item.dtype))
    assert np.array_equal(temporal_split(changed).train.inter_item, holdout.train.inter_item)

    base = ModelConfig(training=FAST)
    first = run_search(dataset, base, trials=3, seed=5)
    second = run_search(changed, base, trials=3, seed=5)
    assert [t["validation"] for t in first["trials"]] == [t["validation"] for t in second["trials"]]
    assert [t["config"] for t in first["trials"]] == [t["config"] for t in second["trials"]]
    assert {t["family"] for t in first["trials"]} == {"current", *FAMILIES}
    assert first["current"]["holdout"] != second["current"]["holdout"]


def test_pinned_hyperparameters_are_never_searched_nor_overridden(dataset, tmp_path):
    env = {"LIGHTFM_COMPONENTS": "7", "LIGHTFM_LOSS": "bpr", "WEIGHT_HALF_LIFE_DAYS": " ", "TRAIN_SEED": "3"}
    pinned = pinned_fields(env)
    assert pinned == {"components", "loss"}
    base = dataclasses.replace(FAST, components=7, loss="bpr")
    document = run_search(dataset, ModelConfig(training=base), pinned, trials=4, seed=1, families=("lightfm",))
    searched = [t["config"]["training"] for t in document["trials"] if t["family"] == "lightfm"]
    assert len(searched) == 4
    assert {(t["components"], t["loss"]) for t in searched} == {(7, "bpr")}
    assert len({t["learning_rate"] for t in searched}) == 4  # the others are searched

    chosen = ModelConfig(
        family="als", training=dataclasses.replace(FAST, components=64, loss="warp", epochs=40), als=ALS
    )
    write_search(tmp_path, {"chosen": chosen.to_json()})
    config = effective_config(dataclasses.replace(base, num_threads=2), tmp_path, pinned)
    assert (config.family, config.als) == ("als", ALS)
    assert (config.training.components, config.training.loss, config.training.epochs) == (7, "bpr", 40)
    assert config.training.num_threads == 2


def test_without_a_recorded_choice_the_environment_rules(tmp_path):
    assert effective_config(FAST, tmp_path, frozenset()) == ModelConfig(training=FAST)
    (tmp_path / "search.json").write_text("{not json")
    assert read_search(tmp_path) is None
    assert effective_config(FAST, tmp_path, frozenset()) == ModelConfig(training=FAST)


def test_a_fit_run_epoch_by_epoch_is_the_same_fit(dataset):
    features = build_features(dataset)
    weights = interaction_weights(dataset, FAST)
    seen = []
    stepped = fit(weights, features, FAST, after_epoch=lambda epoch, _: seen.append(epoch))
    whole = fit(weights, features, FAST)
    assert seen == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(stepped.item_embeddings, whole.item_embeddings)
    np.testing.assert_array_equal(stepped.user_embeddings, whole.user_embeddings)


def test_als_model_ranks_through_rec_model_and_survives_the_artifact(dataset, tmp_path):
    model = train_als(dataset, FAST, ALS)
    assert model.num_users == dataset.num_users and model.num_items == dataset.num_items
    assert not model.item_biases.any() and not model.user_biases.any()
    assert model.item_feature_names == [] and model.user_feature_names == []
    items, scores = model.top_k(np.arange(model.num_users), 10)
    for user in range(model.num_users):
        assert not set(items[user].tolist()) & set(model.excluded_items(user).tolist())
        expected = model.user_embeddings[user] @ model.item_embeddings[items[user]].T
        np.testing.assert_allclose(scores[user], expected, rtol=1e-5, atol=1e-6)
    version = ml.artifact.save(model, tmp_path, {"model": {"family": "als"}})
    loaded, metadata = ml.artifact.load(tmp_path, version)
    assert metadata["model"]["family"] == "als"
    np.testing.assert_array_equal(loaded.top_k(np.arange(5), 10)[0], items[:5])


def test_blend_ranks_by_the_weighted_per_user_standardised_scores(dataset):
    first = train_model(dataset, ModelConfig(training=FAST))
    second = train_als(dataset, FAST, ALS)
    weight = 0.3
    mixed = blend(first, second, weight)

    def standardised(model):
        scores = model.user_embeddings.astype(np.float64) @ model.item_embeddings.T.astype(np.float64)
        scores += model.item_biases
        return (scores - scores.mean(axis=1, keepdims=True)) / scores.std(axis=1, keepdims=True)

    expected = weight * standardised(first) + (1 - weight) * standardised(second)
    actual = mixed.user_embeddings.astype(np.float64) @ mixed.item_embeddings.T.astype(np.float64)
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    assert blend(first, second, 1.0).top_k([0, 1], 5)[0].tolist() == first.top_k([0, 1], 5)[0].tolist()


def test_the_command_records_the_choice_and_the_trials(tmp_path, capsys, monkeypatch, demo_dir):
    monkeypatch.setenv("TRAIN_THREADS", "1")
    monkeypatch.setenv("LIGHTFM_EPOCHS", "5")
    monkeypatch.chdir(tmp_path)
    assert main([str(demo_dir), "--trials", "2", "--model-dir", str(tmp_path / "models"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    recorded = read_search(tmp_path / "models")
    assert recorded == printed
    assert recorded["pinned"] == ["epochs"]
    assert recorded["chosen"]["training"]["epochs"] == 5
    assert {"current", "families", "popularity", "adopted", "reason", "trials", "seconds"} <= recorded.keys()
    assert recorded["chosen"] == (recorded["best"]["config"] if recorded["adopted"] else recorded["current"]["config"])
    headline = summary(recorded)
    assert headline["trials"]["complete"] >= 3 and headline["chosen"] == recorded["chosen"]
    assert set(headline["families"]) == set(FAMILIES)

    # `python -m ml.evaluate DIR --search FILE` measures the same configurations on the same holdout.
    assert ml.evaluate.main([str(demo_dir), "--search", str(tmp_path / "models" / "search.json"), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["popularity"] == recorded["popularity"]
    for family, entry in recorded["families"].items():
        assert {k: v for k, v in measured["models"][family].items() if k != "family"} == entry["holdout"]


def test_every_family_gets_a_trial_whatever_the_time_budget(dataset):
    document = run_search(dataset, ModelConfig(training=FAST), budget_seconds=0.01, seed=2)
    completed = {t["family"] for t in document["trials"] if t["state"] == "COMPLETE"}
    assert completed == {"current", *FAMILIES}
    assert document["budget"] == {"seconds": 0.01, "trials": None}


def test_als_weighs_interactions_with_its_own_settings_not_lightfms(dataset):
    model = train_als(dataset, FAST, ALS)
    other_lightfm = dataclasses.replace(FAST, weight_view=0.2, weight_like=5.0, half_life_days=30.0)
    np.testing.assert_array_equal(train_als(dataset, other_lightfm, ALS).item_embeddings, model.item_embeddings)
    reweighted = train_als(dataset, FAST, dataclasses.replace(ALS, weight_view=0.2, weight_comment=9.0))
    assert not np.allclose(reweighted.item_embeddings, model.item_embeddings)

    document = run_search(dataset, ModelConfig(training=FAST), trials=4, seed=3, families=("lightfm", "als"))
    als_trials = [t["config"] for t in document["trials"] if t["family"] == "als"]
    # Each study starts from the configuration in force (ALS's defaults here), then searches ALS's weights.
    assert AlsSettings(**als_trials[0]["als"]) == AlsSettings()
    assert len({t["als"]["weight_like"] for t in als_trials}) == 4
    assert {t["training"]["weight_like"] for t in als_trials} == {FAST.weight_like}
    first_lightfm = next(t["config"]["training"] for t in document["trials"] if t["family"] == "lightfm")
    assert first_lightfm == dataclasses.asdict(dataclasses.replace(FAST, item_alpha=1e-9, user_alpha=1e-9))


class _Stop(Exception):
    """Raised by a signal handler in the middle of a search, as Celery raises SoftTimeLimitExceeded."""


def test_a_search_stopped_midway_records_what_it_found_with_the_configuration_in_force_kept(dataset):
    current = ModelConfig(training=FAST)
    progress = Progress()

    def stop(signum, frame):
        raise _Stop

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        with pytest.raises(_Stop):
            run_search(dataset, current, trials=100_000, seed=4, progress=progress)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    document = interrupted_record(progress, current, frozenset(), "stopped", trials=100_000, seed=4)
    json.dumps(document, allow_nan=False)
    assert (document["adopted"], document["interrupted"], document["chosen"]) == (False, True, current.to_json())
    completed = [t for t in document["trials"] if t["state"] == "COMPLETE" and t["family"] == "lightfm"]
    assert completed and document["families"]["lightfm"]["holdout"] is None
    best = max(completed, key=lambda t: (t["validation"]["precision@10"], t["validation"]["ndcg@10"]))
    assert document["families"]["lightfm"]["config"] == best["config"]
    assert document["best"]["family"] in document["families"]
    assert document["data"]["validation_users"] > 0 and 3.0 <= document["seconds"] < 30
    headline = summary(document)
    assert headline["adopted"] is False and headline["trials"]["complete"] >= len(completed)


def test_evaluate_search_measures_the_records_configurations_as_the_search_did(dataset):
    record = run_search(dataset, ModelConfig(training=FAST), trials=2, seed=6)
    result = evaluate_search(dataset, FAST, record)
    assert list(result["models"]) == ["current", *record["families"], "chosen"]
    assert result["popularity"] == record["popularity"]
    entries = {"current": record["current"], **record["families"]}
    entries["chosen"] = record["best"] if record["adopted"] else record["current"]
    assert entries["chosen"]["config"] == record["chosen"]
    for label, figures in result["models"].items():
        assert figures["family"] == entries[label]["config"]["family"]
        assert {k: v for k, v in figures.items() if k != "family"} == entries[label]["holdout"], label
