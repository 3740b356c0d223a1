"""``dicelab memorization ...`` end to end on a tiny digits MLP (seconds)."""

import json
from pathlib import Path

import pytest

TINY = """
name = "tiny-mem"
seed = 0
[data]
name = "digits"
val_fraction = 0.0
standardize = true
[model]
name = "mlp"
widths = [32, 16]
[train]
epochs = 2
batch_size = 64
optimizer = "momentum"
lr = 0.05
threads = 1
progress = false
[output]
checkpoint = true
[memorization]
n = 10
taps = ["act1", "act2"]
"""


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_run_prints_the_table_and_writes_csv_and_plots(run_cli, tiny, tmp_path):
    code, out, err = run_cli("memorization", "run", str(tiny), "--lam", "0.1", "--out", str(tmp_path / "r"), "-q")
    assert code == 0, err
    assert "clean acc" in out and "R_proxy" in out and "act2" in out and "test acc" in out
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"record.json", "memorization.csv", "memorization_epochs.csv", "rlp_vs_epoch.png", "rlp_depth.png",
            "rlp_heatmap.png", "checkpoint.pt"} <= files
    record = json.loads((tmp_path / "r" / "record.json").read_text())
    assert record["config"]["memorization"]["lam"] == 0.1 and record["config"]["memorization"]["num_labels"] == 10
    code, out, _ = run_cli("memorization", "plot", str(tmp_path / "r"))
    assert code == 0 and "rlp_vs_epoch.png" in out
    code, out, _ = run_cli("memorization", "probe", str(tmp_path / "r"), "--tap", "act2", "--epochs", "20")
    assert code == 0 and "capacity floor" in out


def test_run_json_and_overrides(run_cli, tiny, tmp_path):
    code, out, err = run_cli("memorization", "run", str(tiny), "--taps", "input:head", "--n", "5", "--reg", "uniform",
                             "--seed", "3", "--json", "--no-plots", "--out", str(tmp_path / "j"))
    assert code == 0, err
    res = json.loads(out)
    assert res["status"] == "completed" and [r["tap"] for r in res["summary"]] == ["input:head"]
    assert res["summary"][0]["n"] == 5 and res["summary"][0]["chance"] == 0.2


def test_sweep_over_lambda_and_over_a_catalog_regularizer(run_cli, tiny, tmp_path):
    code, out, err = run_cli("memorization", "sweep", str(tiny), "--lam", "0,0.3", "--seeds", "0", "--workers", "1",
                             "--out", str(tmp_path / "s"), "-q")
    assert code == 0, err
    assert "lam=0.3" in out and "clean RLP acc" in out
    names = {p.name for p in (tmp_path / "s").iterdir()}
    assert {"study.journal", "sweep.csv", "sweep_summary.csv", "acc_vs_lam.png", "rlp_vs_epoch.png",
            "rlp_depth.png"} <= names
    assert len(list((tmp_path / "s" / "runs").glob("*/record.json"))) == 2
    # the Optuna study holds one complete trial per point; a rerun into the folder skips them
    import optuna

    study = optuna.load_study(study_name="tiny-mem-lam", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "study.journal"))))
    assert len(study.trials) == 2 and all(t.user_attrs["status"] == "completed" for t in study.trials)
    code, out, _ = run_cli("memorization", "sweep", str(tiny), "--lam", "0,0.3", "--seeds", "0", "--workers", "1",
                           "--out", str(tmp_path / "s"), "-q", "--no-plots")
    assert code == 0 and len(list((tmp_path / "s" / "runs").glob("*/record.json"))) == 2
    code, out, err = run_cli("memorization", "sweep", str(tiny), "--dropout", "0.2", "--seeds", "0", "--workers", "1",
                             "--out", str(tmp_path / "d"), "-q", "--no-plots")
    assert code == 0, err
    assert "dropout=0.2" in out
    # the sweep point is a catalog run: its record names randomness.dropout, and no other technique
    (rec,) = (tmp_path / "d" / "runs").glob("*/record.json")
    table = json.loads(rec.read_text())["config"]["randomness"]
    assert [k for k, v in table.items() if v is not None and k not in ("preset", "seeds", "augment")] == ["dropout"]
    assert 0.2 in (table["dropout"].values() if isinstance(table["dropout"], dict) else [table["dropout"]])


def test_taps_lists_module_names_and_shapes(run_cli, tiny):
    code, out, _ = run_cli("memorization", "taps", str(tiny))
    assert code == 0 and "act1" in out and "32" in out and "penultimate" in out


@pytest.mark.parametrize("args, message", [
    (["run", "{cfg}", "--taps", "act9"], "memorization.taps: no module named 'act9' (closest: "),
    (["run", "{cfg}", "--set", "memorization.lam=-1"], "memorization.lam"),
    (["run", "{cfg}", "--set", "memorization.n=1"], "memorization.n"),
    (["run", "{cfg}", "--set", "memorization.lam={act7 = 0.1}"], "lam: key 'act7' is not one of taps"),
    (["sweep", "{cfg}", "--lam", "0,1", "--dropout", "0.1"], "one axis per sweep"),
    (["sweep", "{cfg}", "--lam", "0,x"], "--lam: expected comma-separated numbers"),
    (["sweep", "{cfg}", "--augment", "blur:1"], "--augment: unknown technique 'blur'"),
    (["sweep", "{cfg}", "--augment", "flip:diagonal"], "--augment: 'flip:diagonal': flip mode must be one of"),
    (["sweep", "{cfg}", "--augment", "translation:2"], "--augment: 'translation:2'"),
    (["sweep", "{cfg}", "--dropout", "1"], "--dropout: 1.0 outside [0, 1)"),
    (["sweep", "{cfg}", "--seeds", "a"], "--seeds"),
    (["run", "{plain}"], "no [memorization] table"),
])
def test_bad_input_is_a_one_line_error(run_cli, tiny, tmp_path, args, message):
    plain = tmp_path / "plain.toml"
    plain.write_text(TINY.split("[memorization]")[0])
    args = [a.replace("{cfg}", str(tiny)).replace("{plain}", str(plain)) for a in args]
    code, out, err = run_cli("memorization", *args, "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_help_has_examples(run_cli):
    for cmd in ("run", "sweep", "regularizers", "probe", "taps", "plot"):
        code, out, _ = run_cli("memorization", cmd, "--help")
        assert code == 0 and "Examples" in out and "dicelab memorization" in out
