"""Search space (spec 02 §2, check 1) and the study file (§9)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from dicelab.errors import ConfigError
from dicelab.randomness.config import RandomnessConfig
from dicelab.study.config import config_hash, first_difference, load_study_config
from dicelab.study.space import PAPER_COLUMNS, SearchSpace, paper_strengths


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.from_catalog(bounds={"batch_size": [16, 256]})


def test_catalog_space_has_one_coordinate_per_technique(space):
    assert len(space) == 22
    kinds = {d.technique: d.kind for d in space.dims}
    assert kinds["lr"] == "log" and kinds["weight_noise"] == "log_off" and kinds["batch_size"] == "int"
    assert kinds["optimizer"] == kinds["flip"] == kinds["shuffle"] == "categorical"
    assert space.dim("lr:log10").low == -4 and space.dim("lr:log10").high == 0     # mean loss: [1e-4, 1]
    assert space.dim("weight_noise:log10").low == -6                                # one off decade under 1e-5
    assert int(space.optional.sum()) == 15
    dists = space.distributions()
    assert isinstance(dists["optimizer"], optuna.distributions.CategoricalDistribution)
    assert isinstance(dists["lr:log10"], optuna.distributions.FloatDistribution)


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_every_knob_kind(space, seed):
    rng = np.random.default_rng(seed)
    config = space.decode(space.sample_sparse(rng, 6))
    again = space.decode(space.encode(config))
    a, b = config.flat(), again.flat()
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert abs(value - b[key]) <= 1e-12 * max(1.0, abs(value)), key
        else:
            assert value == b[key], key
    # Optuna params survive the trip too (a choice is stored as the choice)
    via_params = space.config(space.params(space.encode(config))).flat()
    assert via_params.keys() == a.keys()
    for key, value in a.items():
        assert via_params[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key


def test_log_knob_with_off_zero_decodes_to_exactly_zero_below_its_low(space):
    d = space.dim("weight_noise:log10")
    for u in np.linspace(d.low, math.log10(1e-5) - 1e-9, 1000):
        assert d.value(u) == 0.0
    assert d.value(math.log10(1e-5)) == pytest.approx(1e-5, rel=1e-12)
    assert d.value(-1.0) == pytest.approx(0.1, rel=1e-12)
    assert d.coordinate(0.0) == d.low


def test_categorical_cells_have_equal_width():
    space = SearchSpace.from_catalog(["flip"], always=[])
    d = space.dim("flip")
    assert len(d.choices) == 4
    u = np.random.default_rng(0).uniform(d.low, d.high, 100_000)
    counts = {c: 0 for c in d.choices}
    for x in u:
        counts[d.value(x)] += 1
    for c, n in counts.items():
        assert abs(n / len(u) - 0.25) <= 0.01, (c, n)


def test_int_knob_rounds_and_clips(space):
    d = space.dim("batch_size")
    assert d.value(16.4) == 16 and d.value(16.5) == 17 and d.value(1000) == 256 and d.value(3) == 16


def test_unset_optional_techniques_are_off_and_strengths_follow_the_convention(space):
    config = RandomnessConfig.model_validate({"optimizer": "adam", "lr": 0.01, "batch_size": 64, "shuffle": True,
                                              "weight_init": 0.05, "flip": "horizontal", "weight_noise": 1e-3})
    s = space.strengths(config)
    assert s["optimizer"] == "adam" and s["lr"] == pytest.approx(0.01) and s["batch_size"] == 64
    assert s["flip"] == 1.0 and s["shuffle"] == 1.0 and s["dropout"] == 0.0 and s["weight_noise"] == pytest.approx(1e-3)
    assert space.encode(config)[space.names.index("dropout")] == 0.0


def test_paper_space_decodes_like_the_reference_code():
    paper = SearchSpace.paper()
    assert paper.names == list(PAPER_COLUMNS)
    raw = [1, 2.4, 0, 0, 0, 0, 0, 0, 0.05, 0, 0, 0, 0, 0, 2.2, 2, 0, 256, 0, 3, 0, 0]
    config = paper.decode(raw)
    assert config.table("flip")["mode"] == "horizontal"            # ceil(2.4) = 3: horizontal
    assert config.table("optimizer")["name"] == "adam"             # max(1, ceil(2.2)) = 3
    assert config.table("lr")["value"] == pytest.approx(1e-2)
    assert config.table("weight_noise")["eta"] == pytest.approx(1e-3)
    s = paper_strengths(dict(zip(PAPER_COLUMNS, raw, strict=True)))
    assert s["flip"] == 1.0 and s["lr"] == pytest.approx(0.01) and s["weight_noise"] == pytest.approx(1e-3)
    assert "optimizer" not in s and s["weight_init_std"] == 0.05


def test_space_rebuilds_from_json(space):
    again = SearchSpace.from_json(space.to_json())
    assert again.dims == space.dims
    assert SearchSpace.from_json(SearchSpace.paper().to_json()).dims == SearchSpace.paper().dims


def test_bad_space_settings_name_the_field():
    with pytest.raises(ConfigError, match=r"search.techniques: unknown technique 'dropuot'"):
        SearchSpace.from_catalog(["dropuot"])
    with pytest.raises(ConfigError, match=r"search.bounds.batch_size: low 256 must be below high 16"):
        SearchSpace.from_catalog(bounds={"batch_size": [256, 16]})
    with pytest.raises(ConfigError, match=r"search.always: weight_init has no off value"):
        SearchSpace.from_catalog(always=["shuffle"])


def test_study_file_validates_and_names_fields(tmp_path):
    cfg = load_study_config("examples/quick_digits.toml")
    assert cfg.study.name == "digits-quick" and cfg.task.data.name == "digits"
    assert cfg.space().dim("batch_size").high == 256
    assert cfg.storage_url() == "journal:runs/digits-quick/study.journal"
    with pytest.raises(ConfigError, match=r"quick_digits.toml: study.sampler: unknown sampler 'pos'"):
        load_study_config("examples/quick_digits.toml", ["study.sampler=pos"])
    with pytest.raises(ConfigError, match=r"fitness.seedz"):
        load_study_config("examples/quick_digits.toml", ["fitness.seedz=3"])
    with pytest.raises(ConfigError, match=r"needs seeds >= 3"):
        load_study_config("examples/quick_digits.toml", ["fitness.pruner=wilcoxon"])
    # the shortcuts of [task]
    short = load_study_config(data={"task": {"dataset": "digits", "model": "mlp", "epochs": 3}})
    assert short.task.train.epochs == 3 and short.task.model.name == "mlp"


def test_config_hash_ignores_runtime_knobs_and_names_the_first_difference():
    a = load_study_config("examples/quick_digits.toml")
    b = load_study_config("examples/quick_digits.toml", ["study.n_trials=999", "study.timeout_s=5"])
    c = load_study_config("examples/quick_digits.toml", ["task.train.lr=0.2"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    import json

    diff = first_difference(json.loads(a.to_json()), json.loads(c.to_json()))
    assert diff.startswith("task.train.lr (stored 0.1, now 0.2)")
    # -inf (the default diverged value) survives the JSON round trip through storage
    from dicelab.study.config import StudyConfig

    assert StudyConfig.model_validate_json(a.to_json()).fitness.diverged_value == -math.inf


def test_package_exports_resolve():
    import dicelab.study as study

    for name in study.__all__:
        assert getattr(study, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        study.nope  # noqa: B018
