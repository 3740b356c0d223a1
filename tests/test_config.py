import pytest

from dicelab.config import apply_overrides, load_run_config, parse_override
from dicelab.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_example_configs_parse():
    for name in ("digits_mlp", "mnist1d_mlp"):
        cfg = load_run_config(f"examples/{name}.toml")
        assert cfg.train.epochs >= 1


@pytest.mark.parametrize(
    "text, field",
    [
        ("[train]\nlrr = 0.1\n", "train.lrr"),
        ("[train]\nlr = -1\n", "train.lr"),
        ("[train]\nepochs = \"ten\"\n", "train.epochs"),
        ("[data]\nname = \"imagenet\"\n", "data.name"),
        ("[model]\nactivation = \"swishy\"\n", "model.activation"),
        ("[train]\noptimizer = \"lion\"\n", "train.optimizer"),
        ("[data]\nval_fraction = 1.5\n", "data.val_fraction"),
        ("[bogus]\nx = 1\n", "bogus"),
    ],
)
def test_bad_field_is_one_line_error_naming_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as info:
        load_run_config(write(tmp_path, text))
    message = str(info.value)
    assert field in message
    assert "\n" not in message


@pytest.mark.parametrize("text, field", [("[train]\nlrr = 0.1\n", "train.lrr"), ("[train]\nlr = -1\n", "train.lr")])
def test_cli_exits_2_on_bad_field(tmp_path, run_cli, text, field):
    code, out, err = run_cli("train", str(write(tmp_path, text)))
    assert code == 2
    assert field in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_unknown_loader_option_names_it(tmp_path, run_cli):
    code, _, err = run_cli("train", str(write(tmp_path, "[data]\nname='teacher'\noptions={dimm=3}\n")), "-q")
    assert code == 2 and "data.options.dimm" in err


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_run_config(write(tmp_path, "[train\n"))


def test_overrides_parse_toml_values_and_bare_words():
    assert parse_override("train.lr=0.05") == (["train", "lr"], 0.05)
    assert parse_override("model.widths=[8, 8]") == (["model", "widths"], [8, 8])
    assert parse_override("train.optimizer=adam") == (["train", "optimizer"], "adam")
    data = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=0.5", "seed=4", "data.name=teacher"])
    assert data == {"train": {"lr": 0.5}, "seed": 4, "data": {"name": "teacher"}}
    cfg = load_run_config("examples/digits_mlp.toml", overrides=["train.lr=0.01", "seed=9"])
    assert cfg.train.lr == 0.01 and cfg.seed == 9
    with pytest.raises(ConfigError, match="train.lrx"):
        load_run_config("examples/digits_mlp.toml", overrides=["train.lrx=0.01"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("train.lr")
