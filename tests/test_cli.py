import json
import subprocess
import sys

import dicelab


def test_version_entry_point():
    out = subprocess.run([sys.executable, "-m", "dicelab.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"dicelab {dicelab.__version__}"


def test_help_lists_commands_with_examples(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "train" in out and "datasets" in out
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and "Examples" in out and "--set" in out


def test_datasets_command(run_cli):
    code, out, _ = run_cli("datasets", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 7
    digits = next(r for r in rows if r["name"] == "digits")
    assert digits["offline"] and digits["input_shape"] == [1, 8, 8] and digits["num_classes"] == 10
    code, out, _ = run_cli("datasets")
    assert code == 0 and "fashion-mnist" in out and "cifar100" in out


def test_train_prints_accuracy_and_record_path(tmp_path, run_cli):
    code, out, err = run_cli("train", "examples/digits_mlp.toml", "--set", "train.epochs=2", "--out",
                             str(tmp_path), "-q")
    assert code == 0, err
    assert "test accuracy: 0." in out
    assert f"run record: {tmp_path / 'record.json'}" in out
    assert json.loads((tmp_path / "record.json").read_text())["final"]["epochs_completed"] == 2


def test_usage_error_exits_2(run_cli, tmp_path):
    code, _, err = run_cli("train", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml: config file not found" in err


def test_unknown_option_is_a_usage_error(run_cli, tmp_path):
    code, _, err = run_cli("train", str(tmp_path / "missing.toml"), "--bogus")
    assert code == 2 and "No such option: --bogus" in err
