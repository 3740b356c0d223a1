"""The analysis tables on a dicelab (catalog-space) study: trials_table, summarize, correlations, importance,
and the Analysis save/load round trip. Synthetic trials, in-memory storage, no training."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest

from dicelab.errors import ConfigError
from dicelab.study.analysis import Analysis, correlations, importance, summarize, trials_table
from dicelab.study.space import SearchSpace

N_OK = 120


@pytest.fixture(scope="module")
def study() -> tuple[optuna.Study, SearchSpace]:
    """120 COMPLETE trials whose value rises with input noise and falls with dropout (plus noise), one
    diverged (−inf), one cut, one FAIL without parameters and one RUNNING."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_catalog()
    study = optuna.create_study(direction="maximize", storage=optuna.storages.InMemoryStorage())
    study.set_user_attr("dicelab:space", space.to_json())
    study.set_user_attr("dicelab:n_classes", 10)
    rng = np.random.default_rng(7)
    dists = space.distributions()
    j_in, j_do = space.names.index("input_noise"), space.names.index("dropout")
    for i in range(N_OK):
        # every coordinate uniform: PED-ANOVA's Parzen estimates are unreliable on the point masses of a
        # sparse start with only 12 top trials (Optuna itself then ranks random off/on knobs first)
        u = space.sample_sparse(rng, None)
        value = 0.5 + 0.4 * u[j_in] / space.high[j_in] - 0.2 * u[j_do] / space.high[j_do] + rng.normal(0, 0.02)
        study.add_trial(optuna.trial.create_trial(
            params=space.params(u), distributions=dists, value=float(value),
            user_attrs={"status": "ok", "test_accuracy": float(value) - 0.01, "value_seeds": [value, value],
                        "epochs": 5, "duration_s": 1.5, "worker": "host:1"},
            system_attrs={"pso:p": i % 10, "pso:t": i // 10}))
    u = space.sample_sparse(rng, 4)
    study.add_trial(optuna.trial.create_trial(params=space.params(u), distributions=dists, value=-math.inf,
                                              user_attrs={"status": "diverged", "reason": "non-finite loss"}))
    study.add_trial(optuna.trial.create_trial(params=space.params(u), distributions=dists, value=0.1,
                                              user_attrs={"status": "cut", "reason": "val < 0.12"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"status": "error", "reason": "RuntimeError: boom"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params=space.params(u),
                                              distributions=dists))
    return study, space


def test_trials_table_of_a_catalog_study(study):
    study, space = study
    table = trials_table(study)
    assert len(table) == N_OK + 4
    assert table["state"].tolist()[-4:] == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING"]
    assert table["status"].tolist()[-4:-1] == ["diverged", "cut", "error"]
    assert table["reason"].iloc[-2] == "RuntimeError: boom"
    assert [c for c in table.columns if c.startswith("coord:")] == [f"coord:{n}" for n in space.names]
    first = study.trials[0]
    assert np.array_equal(table.filter(like="coord:").iloc[0].to_numpy(), space.coordinates(first.params))
    strengths = space.strengths(space.config(first.params))
    for key, value in strengths.items():
        got = table[f"strength:{key}"].iloc[0]
        assert got == value if isinstance(value, str) else got == pytest.approx(value, rel=1e-12), key
    assert table["optimizer"].iloc[0] == strengths["optimizer"]
    assert table["optimizer"].isna().tolist()[-2:] == [True, False]   # FAIL has no params; RUNNING has
    assert table.filter(like="coord:").iloc[-2].isna().all()
    assert table["pso_p"].iloc[13] == 3 and table["pso_t"].iloc[13] == 1 and pd.isna(table["pso_p"].iloc[-1])
    assert table["value_seed_1"].iloc[0] == table["value"].iloc[0] and table["epochs"].iloc[0] == 5
    assert table["duration_s"].iloc[0] == 1.5 and table["worker"].iloc[0] == "host:1"
    assert table["value"].iloc[-4] == -math.inf


def test_summary_counts(study):
    study, _ = study
    summary = summarize(trials_table(study)).set_index("group")
    everything = summary.loc["all"]
    assert everything["n"] == N_OK + 4 and everything["n_complete"] == N_OK + 2
    assert everything["n_fail"] == 1 and everything["n_pruned"] == 0 and everything["n_cut"] == 1
    # diverged = −inf and anything below 1.5 / n_classes (the cut trial at 0.1)
    assert everything["n_diverged"] == 2
    assert everything["diverged_share"] == pytest.approx(2 / (N_OK + 2))
    table = trials_table(study)
    ok = table[table["status"] == "ok"]
    best = ok.loc[ok["value"].idxmax()]
    assert everything["best_value"] == best["value"] and everything["best_test"] == best["test_accuracy"]
    groups = [g for g in summary.index if g != "all"]
    assert groups == [g for g in ("sgd", "momentum", "adam") if g in groups] and len(groups) >= 2
    assert summary.loc[groups, "n"].sum() == N_OK + 3                  # the FAIL trial has no optimizer


def test_correlations_and_importance_find_the_planted_effects(study):
    study, _ = study
    table = trials_table(study)
    corr = correlations(table, min_n=20).set_index(["group", "technique"])
    assert corr.loc[("all", "input_noise"), "rho"] > 0.7
    assert corr.loc[("all", "input_noise"), "n"] == N_OK            # −inf and 0.1 (< 0.15) are left out
    assert corr.loc[("all", "input_noise"), "level"] == "data"
    assert "optimizer" not in corr.index.get_level_values("technique")   # a category, not a strength
    pearson = correlations(table, method="pearson", by=None, min_n=20).set_index("technique")
    assert pearson.loc["input_noise", "rho"] > 0.7
    imp = importance(table, space=SearchSpace.from_catalog())
    assert imp["technique"].iloc[0] == "input_noise"
    assert set(imp["technique"]) >= {"lr", "weight_noise", "optimizer"}   # lr:log10 → lr
    with pytest.raises(ConfigError, match="target_quantile"):
        importance(table, target_quantile=1.5)
    with pytest.raises(ConfigError, match="by"):
        correlations(table, by="colour")


def test_analysis_save_load_round_trip(study, tmp_path):
    study, _ = study
    table = trials_table(study)
    analysis = Analysis(study_name="s", header={"study": "s", "trials": {"COMPLETE": 122}}, table=table,
                        summary=summarize(table), correlations=correlations(table, min_n=20),
                        importance=importance(table), best=None, best_vs_default=None, ablation=None,
                        n_classes=10, min_n=20)
    (tmp_path / "ablation.csv").write_text("stale\n")
    analysis.save(tmp_path)
    assert not (tmp_path / "ablation.csv").exists()
    back = Analysis.load(tmp_path)
    pd.testing.assert_frame_equal(back.table, table)
    assert back.table.attrs["dicelab:space"] == table.attrs["dicelab:space"]
    pd.testing.assert_frame_equal(back.summary, analysis.summary)
    pd.testing.assert_frame_equal(back.correlations, analysis.correlations, check_dtype=False)
    assert back.header == analysis.header and back.min_n == 20 and back.ablation is None
    with pytest.raises(ConfigError, match="header.json"):
        Analysis.load(tmp_path / "nothing")
