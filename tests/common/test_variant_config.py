"""A ``model`` variant's declaration: the settings it trains with, its line of versions, the errors that stop a
process at start; and its Redis pointer, which never moves production's and announces nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.config import ConfigError, load_settings
from common.experiments import model_variant_dirs, variant_model_dir

META = {"created_at": "2026-11-29T00:00:00Z", "num_users": 1, "num_items": 2}
BPR = {"name": "bpr", "share": 0.5, "ranking": "model", "training": {"LIGHTFM_LOSS": "bpr", "WEIGHT_LIKE": "4"}}


def declared(*variants, name="exp") -> str:
    return json.dumps({"name": name, "variants": [{"name": "prod", "share": 0.5, "ranking": "production"}, *variants]})


def test_a_model_variant_trains_with_the_environment_and_its_overrides_pinned():
    settings = load_settings({"EXPERIMENT": declared(BPR), "LIGHTFM_EPOCHS": "7"}, dotenv=False)
    variant = settings.experiment.variant("bpr")
    assert (variant.settings.loss, variant.settings.weight_like, variant.settings.epochs) == ("bpr", 4.0, 7)
    assert settings.training.loss == "warp"  # production keeps the environment's
    assert variant.pinned == {"loss", "weight_like"}  # the model search never replaces them
    assert settings.experiment.model_variants == (variant,)
    assert model_variant_dirs(settings.experiment, "/m") == {variant.lineage: variant_model_dir("/m", variant.lineage)}
    assert variant_model_dir("/m", variant.lineage) == f"/m/variants/{variant.lineage}"


def test_the_line_changes_with_the_experiment_the_variant_or_its_settings_only():
    def line(spec, name="exp"):
        return load_settings({"EXPERIMENT": declared(spec, name=name)}, dotenv=False).experiment.variant("bpr").lineage

    first = line(BPR)
    assert first.startswith("exp-bpr-") and len(first) == len("exp-bpr-") + 8
    assert line(dict(BPR, share=0.5)) == first
    assert line(dict(BPR, training={"WEIGHT_LIKE": "4", "LIGHTFM_LOSS": "bpr"})) == first  # order does not matter
    assert line(dict(BPR, training={"LIGHTFM_LOSS": "bpr"})) != first
    assert line(BPR, name="exp2") != first


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"LIGHTFM_LOSS": "nope"}, r"variants\[1\]\.training: LIGHTFM_LOSS='nope' is invalid: must be one of"),
        ({"WEIGHT_LIKE": "-1"}, r"WEIGHT_LIKE='-1' is invalid"),
        ({"LIGHTFM_COLOUR": "red"}, r"not training variables: LIGHTFM_COLOUR"),
    ],
)
def test_a_wrong_training_override_stops_the_process_naming_the_variable(training, message):
    with pytest.raises(ConfigError, match=rf"^EXPERIMENT=.* is invalid: .*{message}"):
        load_settings({"EXPERIMENT": declared(dict(BPR, training=training))}, dotenv=False)


def test_a_variants_publish_moves_its_pointer_only_and_sends_no_message(cache):
    items = [("p1", ("t",), "c"), ("p2", (), "c")]
    lists = np.array([[0, 1]], dtype=np.int32), np.array([[2.0, 1.0]], dtype=np.float32)
    for version in ("20261129T000000Z-00000001", "20261129T000000Z-00000002", "20261129T000000Z-00000003"):
        cache.stage_version(version, items, np.array([0, 1]), np.array([2.0, 1.0]), META, ttl=60)
        cache.write_user_lists(version, ["u1"], *lists, ttl=60)
    production, first, second = "20261129T000000Z-00000001", "20261129T000000Z-00000002", "20261129T000000Z-00000003"
    cache.publish_version(production, {"version": production, **META}, retain_seconds=100)
    updates = cache.subscribe()
    assert cache.publish_variant_version("line", first, retain_seconds=100) is None
    assert cache.publish_variant_version("line", second, retain_seconds=100) == first
    assert updates.get_message(timeout=0.5) is None  # web workers poll variant pointers: no message
    assert cache.current_version() == production and cache.variant_version("line") == second
    assert cache.variant_versions(["line", "other"]) == {"line": second, "other": None}
    assert 0 < cache.client.ttl(cache.meta_key(first)) <= 100 and 0 < cache.client.ttl(cache.recs_key(first, "u1"))
    for kept in (production, second):
        assert cache.client.ttl(cache.meta_key(kept)) == -1 and cache.client.ttl(cache.recs_key(kept, "u1")) == -1
    # A later production publish leaves the variant's lists alone, as the variant's left production's.
    cache.stage_version("20261129T000000Z-00000004", items, np.array([0]), np.array([1.0]), META, ttl=60)
    cache.publish_version("20261129T000000Z-00000004", {"version": "20261129T000000Z-00000004", **META}, 100)
    assert cache.client.ttl(cache.recs_key(second, "u1")) == -1
    assert cache.retire_variants(["line"], 100) == []
    assert cache.retire_variants([], 100) == ["line"]
    assert 0 < cache.client.ttl(cache.variant_key("line")) <= 100
    assert 0 < cache.client.ttl(cache.recs_key(second, "u1")) <= 100
