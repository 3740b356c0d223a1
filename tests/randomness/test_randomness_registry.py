"""Spec 01 checks 1 (registry), 20 (config), 21 (reference encoding), 23 (CLI) and the README table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from dicelab.config import load_run_config
from dicelab.errors import ConfigError
from dicelab.randomness import Level, RandomnessConfig, technique_names, techniques
from dicelab.randomness.encoding import DEFAULT_VECTOR, decode, encode
from tests._support import small_digits_config

ROOT = Path(__file__).resolve().parents[2]


def test_registry_has_22_techniques_in_four_levels():
    classes = techniques()
    assert len({c.name for c in classes}) == 22
    assert sorted(c.paper_index for c in classes) == list(range(22))
    counts = {lv: len(techniques(lv)) for lv in Level}
    assert counts == {Level.DATA: 8, Level.MODEL: 5, Level.OPTIMIZATION: 8, Level.LEARNING: 1}
    assert [c.paper_group for c in classes] == ["data"] * 8 + ["network"] * 6 + ["optimization"] * 8
    for c in classes:
        main = c.main()
        assert main.search and main.low is not None and main.high is not None or main.kind in ("bool", "choice")
        if main.kind in ("float", "int"):
            lo, hi = main.domain
            assert lo <= main.low <= main.high <= hi, c.name
            main.validate(main.midpoint())
        for k in c.knobs:
            assert hasattr(k, "off")
            if k.off is not None:
                assert k.validate(k.off) == k.off, (c.name, k.name)


def test_toml_example_parses_and_scalar_equals_table(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("""
[randomness]
preset = "none"
flip = "horizontal"
loss_noise = 0.1
gradient_dropout = { p = 0.1, rescale = false }
dropconnect = { p = 0.2, mode = "weights" }
[randomness.seeds]
dropout = 7
""")
    cfg = load_run_config(toml).randomness
    assert cfg.active() == ["flip", "dropconnect", "loss_noise", "gradient_dropout"]
    assert cfg.seeds == {"dropout": 7}
    assert RandomnessConfig(loss_noise=0.1) == RandomnessConfig(loss_noise={"sigma": 0.1})
    assert RandomnessConfig(loss_noise=0.1) != RandomnessConfig(loss_noise=0.2)


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("los_noise", 0.1, "randomness.los_noise"),
    ("dropout", 1.2, "randomness.dropout: 1.2 outside [0, 1)"),
    ("dropout", "high", "randomness.dropout"),
    ("flip", "diagonal", "randomness.flip"),
    ("dropconnect", {"p": 0.1, "mode": "rows"}, "randomness.dropconnect: mode"),
    ("gradient_dropout", {"q": 0.1}, "unknown knob 'q'"),
])
def test_bad_randomness_fields_name_the_field(field, value, needle):
    with pytest.raises(ConfigError) as err:
        small_digits_config(randomness={field: value})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_exit_code_2_names_the_field(run_cli):
    code, out, err = run_cli("train", str(ROOT / "examples/digits_mlp.toml"), "--set", "randomness.dropout=1.2")
    assert code == 2 and "randomness.dropout" in err


def test_out_of_range_inside_domain_is_accepted_and_set_works():
    assert small_digits_config(randomness={"dropout": 0.7}).randomness.is_on("dropout")
    cfg = load_run_config(data={"randomness": {"loss_noise": 0.1}}, overrides=["randomness.loss_noise=0.2"])
    assert cfg.randomness.loss_noise == {"sigma": 0.2}


def test_flat_round_trip():
    cfg = RandomnessConfig(preset="paper", loss_noise=0.1, gradient_dropout={"p": 0.1, "rescale": True},
                           flip="vertical", seeds={"dropout": 3}, augment={"per": "batch"}, optimizer="adam")
    flat = cfg.flat()
    assert flat["gradient_dropout"] == 0.1 and flat["gradient_dropout.rescale"] is True
    assert flat["loss_noise"] == 0.1 and flat["seeds.dropout"] == 3 and flat["augment.per"] == "batch"
    assert RandomnessConfig.from_flat(flat) == cfg


def test_reference_default_vector_decodes_to_baselines_only():
    cfg = decode(DEFAULT_VECTOR)
    assert cfg.active() == ["weight_init", "optimizer", "lr", "batch_size"]
    assert cfg.weight_init["std"] == 0.05 and cfg.optimizer["name"] == "sgd"
    assert math.isclose(cfg.lr["value"], 1e-3, rel_tol=1e-12) and cfg.batch_size["value"] == 128


def test_reference_vector_example():
    v = [0.6, 2.5, 0.1, 0.1, 0.1, 0, 0.3, 0.1, 0.05, 0.2, 0.2, 0.1, 0.05, 0.3, 2.2, 2.5, -0.5, 200.4, 0.5, 4, 0.3, 0.1]
    cfg = decode(v)
    assert cfg.shuffle["on"] is True and cfg.flip["mode"] == "horizontal" and not cfg.is_on("contrast")
    assert cfg.optimizer["name"] == "adam" and cfg.batch_size["value"] == 200
    assert math.isclose(cfg.lr["value"], 3.1623e-3, rel_tol=1e-4)
    assert math.isclose(cfg.weight_noise["eta"], 1e-4, rel_tol=1e-12)
    lattice = [1, 3, 0.1, 0.1, 0.1, 0, 0.3, 0.1, 0.05, 0.2, 0.2, 0.1, 0.05, 0.3, 3, 2.5, -0.5, 200, 0.5, 4, 0.3, 0.1]
    assert encode(cfg) == lattice
    assert encode(decode(lattice)) == lattice
    assert encode(decode(DEFAULT_VECTOR)) == list(map(float, DEFAULT_VECTOR))


def test_cli_lists_decodes_and_previews(run_cli, tmp_path):
    code, out, _ = run_cli("techniques")
    assert code == 0
    for name in technique_names():
        assert name in out
    assert len(re.findall(r"^│ *\d+ *│", out, flags=re.M)) == 22
    _, data, _ = run_cli("techniques", "--level", "data")
    assert len(re.findall(r"^│ *\d+ *│", data, flags=re.M)) == 8
    rows = json.loads(run_cli("techniques", "--json")[1])
    assert len(rows) == 22 and {r["level"] for r in rows} == {"data", "model", "optimization", "learning"}
    for r in rows:
        assert {"name", "level", "paper_index", "paper_group", "hooks", "knobs"} <= set(r)
        assert {"name", "kind", "low", "high", "scale", "off", "domain", "choices", "search"} <= set(r["knobs"][0])
    vector = "0.6,2.5,0.1,0.1,0.1,0,0.3,0.1,0.05,0.2,0.2,0.1,0.05,0.3,2.2,2.5,-0.5,200.4,0.5,4,0.3,0.1"
    code, decoded, _ = run_cli("techniques", "--decode", vector)
    assert code == 0
    toml = tmp_path / "decoded.toml"
    toml.write_text(decoded)
    assert load_run_config(toml).randomness == decode([float(x) for x in vector.split(",")])
    for spec in ("rotation=0.2", "lr_schedule=-0.5", "gradient_noise=0.01"):
        png = tmp_path / f"{spec.split('=')[0]}.png"
        code, out, err = run_cli("techniques", "--preview", spec, "--out", str(png))
        assert code == 0, err
        assert png.stat().st_size > 1000
    code, _, err = run_cli("techniques", "--preview", "dropout=0.2")
    assert code == 2 and "no preview" in err


def test_readme_table_matches_registry():
    readme = (ROOT / "README.md").read_text()
    from dicelab.randomness.cli import readme_table

    assert readme_table() in readme
