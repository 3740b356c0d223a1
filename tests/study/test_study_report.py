"""The HTML study report (spec 02 §7, check 13): self-contained, opens in headless Chromium with no console
error and no network request, ≥ 4 embedded PNG figures; the plots cope with empty and degenerate tables."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from _study_cdp import Chromium, find_chromium
from scipy import stats

from dicelab.study import plots
from dicelab.study.analysis import Analysis
from dicelab.study.report import render_report, write_report
from dicelab.study.space import SearchSpace

N_CLASSES = 10
MIN_N = 10


# -- a realistic 30-trial analysis in the documented schemas (synthetic fitness) -----------------------------
def _trials_table(space: SearchSpace, n_trials: int, seed: int, failures: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_trials):
        u = space.sample_sparse(rng, 4)
        st = space.strengths_of(u)
        lr = 10.0 ** u[space.names.index("lr:log10")]
        value = (0.93 - 0.35 * st["input_noise"] - 0.15 * st["label_smoothing"] - 0.3 * st["dropout"] ** 2
                 - 0.04 * abs(np.log10(lr) + 1.5) + (0.02 if st["optimizer"] == "adam" else 0.0)
                 + rng.normal(0.0, 0.01))
        row = {"number": i, "state": "COMPLETE", "status": "ok", "reason": None, "value": value,
               "value_seed_0": value, "test_accuracy": value - 0.004 + rng.normal(0.0, 0.003),
               "duration_s": 2.0 + rng.uniform(), "worker": f"host:{100 + i % 2}", "pso_p": i % 6,
               "pso_t": i // 6, "epochs": 20, "optimizer": st["optimizer"]}
        if failures and i in (5, 17):
            row.update(status="diverged", value=-np.inf, value_seed_0=-np.inf, test_accuracy=0.098,
                       reason=f"non-finite training loss (nan) at epoch {2 + i % 3}")
        elif failures and i == 11:
            row.update(status="cut", value=0.094, value_seed_0=0.094, test_accuracy=0.1,
                       reason="validation accuracy 0.094 < 0.12 after epoch 1")
        elif failures and i == 23:
            row.update(state="FAIL", status="error", value=np.nan, value_seed_0=np.nan, test_accuracy=np.nan,
                       reason="RuntimeError: injected fault <in trial 23>")
        row.update({f"coord:{name}": float(x) for name, x in zip(space.names, u, strict=True)})
        row.update({f"strength:{t}": s for t, s in st.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _correlations(table: pd.DataFrame, levels: dict[str, str]) -> pd.DataFrame:
    ok = table[np.isfinite(table["value"]) & (table["value"] >= 1.5 / N_CLASSES)]
    out = []
    for tech in [c.split(":", 1)[1] for c in table.columns if c.startswith("strength:")]:
        if tech == "optimizer":
            continue
        for group in ("all", "sgd", "momentum", "adam"):
            sub = ok if group == "all" else ok[ok["optimizer"] == group]
            x = sub[f"strength:{tech}"].astype(float)
            rho, p = (stats.spearmanr(x, sub["value"]) if len(sub) >= MIN_N and x.nunique() > 1
                      else (np.nan, np.nan))
            out.append({"technique": tech, "level": levels[tech], "group": group, "rho": rho, "p": p,
                        "n": len(sub)})
    return pd.DataFrame(out)


def synthetic_analysis(n_trials: int = 30, seed: int = 0, *, failures: bool = True,
                       reruns: bool = True) -> Analysis:
    """An :class:`Analysis` with every table in the schema that ``analyze`` writes (synthetic fitness)."""
    space = SearchSpace.from_catalog()
    levels = {d.technique: d.level for d in space.dims}
    table = _trials_table(space, n_trials, seed, failures)
    corr = _correlations(table, levels)
    imp = corr.assign(importance=corr["rho"].abs().fillna(0.02) / 3 + 0.01)[["technique", "level", "group",
                                                                            "importance"]]
    imp = imp.assign(low=imp["importance"] * 0.6, high=imp["importance"] * 1.5)
    summary = pd.DataFrame([{
        "group": g, "n": len(s), "n_complete": int((s["state"] == "COMPLETE").sum()),
        "n_fail": int((s["state"] == "FAIL").sum()), "n_pruned": 0,
        "n_diverged": int((s["status"] == "diverged").sum()), "n_cut": int((s["status"] == "cut").sum()),
        "best_value": s["value"].max(), "best_test": s.loc[s["value"].idxmax(), "test_accuracy"],
        "median_value": s["value"].median(), "diverged_share": float((~(s["value"] >= 0.15)).mean())}
        for g, s in [("all", table), *table.groupby("optimizer")]])
    best_row = table.loc[table["value"].idxmax()]
    best = pd.DataFrame([{"technique": d.technique, "level": d.level, "coordinate": d.name,
                          "value": d.value(best_row[f"coord:{d.name}"]), "off": d.off,
                          "on": None if d.off is None else d.value(best_row[f"coord:{d.name}"]) != d.off,
                          "trial": int(best_row["number"])} for d in space.dims])
    on = best.loc[best["on"].eq(True), "technique"].tolist()
    ablation = pd.DataFrame(
        [{"factor": t, "kind": "technique", "n": 5, "val_mean": 0.9, "test_mean": 0.89, "test_std": 0.004,
          "delta_test": -0.01 * (k + 1), "delta_val": -0.008 * (k + 1)} for k, t in enumerate(on)]
        + [{"factor": lv, "kind": "level", "n": 5, "val_mean": 0.88, "test_mean": 0.87, "test_std": 0.006,
            "delta_test": -0.02, "delta_val": -0.015} for lv in ("data", "model", "optimization", "learning")])
    bvd = pd.DataFrame([
        {"arm": "best", "n": 5, "val_mean": 0.951, "val_std": 0.003, "test_mean": 0.948, "test_std": 0.004,
         "diff_test": 0.0, "p_wilcoxon": np.nan},
        {"arm": "tuning_only", "n": 5, "val_mean": 0.944, "val_std": 0.004, "test_mean": 0.941,
         "test_std": 0.005, "diff_test": -0.007, "p_wilcoxon": 0.0625},
        {"arm": "default", "n": 5, "val_mean": 0.902, "val_std": 0.006, "test_mean": 0.899, "test_std": 0.007,
         "diff_test": -0.049, "p_wilcoxon": 0.0625}])
    config = {"study": {"name": "digits-report", "sampler": "pso", "n_trials": n_trials},
              "task": {"dataset": "digits", "model": {"name": "mlp"}, "train": {"epochs": 20}}}
    # The keys of dicelab.study.analyze_study's header.
    header = {"study": "digits-report <test>", "task": "digits / mlp, 20 epochs", "sampler": "pso",
              "budget": n_trials, "trials": n_trials, "trials_by_state": table["state"].value_counts().to_dict(),
              "wall_time_s": 61.34, "seed": seed, "source": "run", "dicelab_version": "0.1.0",
              "analysed_at": "2025-01-01T00:00:00+00:00", "config": json.dumps(config)}
    return Analysis(
        study_name="digits-report", header=header, table=table, summary=summary, correlations=corr,
        importance=imp, best=best if reruns else None, best_vs_default=bvd if reruns else None,
        ablation=ablation if reruns else None, n_classes=N_CLASSES, min_n=MIN_N)


def empty_analysis() -> Analysis:
    return Analysis(
        study_name="empty", header={}, table=pd.DataFrame(columns=["number", "state", "status", "value"]),
        summary=None, correlations=pd.DataFrame(columns=["technique", "level", "group", "rho", "p", "n"]),
        importance=pd.DataFrame(columns=["technique", "level", "group", "importance"]), best=None,
        best_vs_default=None, ablation=None, n_classes=10, min_n=30)


# -- helpers ---------------------------------------------------------------------------------------------------
def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (after checking its signature and IHDR chunk CRC)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return struct.unpack(">II", data[16:24])


def img_sources(html: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    analysis = synthetic_analysis()
    path = write_report(analysis, tmp_path_factory.mktemp("report") / "sub" / "report.html")
    return analysis, path, path.read_text(encoding="utf-8")


# -- check 13 --------------------------------------------------------------------------------------------------
def test_report_is_self_contained(report):
    _, path, html = report
    srcs = img_sources(html)
    assert len(srcs) >= 4
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == 6  # all six figures exist for this table (failures present, correlations with n ≥ 10)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    # Autoescape: the header's "<test>" and the failure reason's "<in trial 23>" are text, not markup.
    assert "digits-report &lt;test&gt;" in html and "<test>" not in html
    # Header fields, the collapsed config and the section 4 tables.
    for text in ("digits / mlp, 20 epochs", "<th>trials by state</th><td>COMPLETE 29 · FAIL 1</td>",
                 "<th>wall time (s)</th><td>61.3</td>", "<details>", "&#34;n_trials&#34;: 30", "tuning_only",
                 "ablation Δ test", "Ablation by level", '<td class="num">0.0625</td>', "<td>tuning_only</td>"):
        assert text in html, text


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)")
def test_report_opens_in_headless_chromium(report, tmp_path):
    _, path, html = report
    bad = tmp_path / "bad.html"  # a page that must trip both detectors: the harness can see what it checks
    bad.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                   '<script>console.error("boom")</script></body></html>')
    with Chromium(find_chromium()) as browser:
        control = browser.visit(bad)
        visit = browser.visit(path)
    assert control.requests == ["http://127.0.0.1:9/x.png"] and any("boom" in e for e in control.console_errors)
    assert visit.console_errors == []
    assert visit.requests == []
    assert visit.images_total == len(img_sources(html)) == visit.images_decoded  # every PNG decodes
    shot = tmp_path / "report.png"
    shot.write_bytes(visit.screenshot)
    width, height = png_size(visit.screenshot)
    assert width >= 800 and height > 2000 and len(visit.screenshot) > 50_000


def test_report_from_saved_analysis(report, tmp_path):
    """`dicelab study report` reads a saved analysis back (parquet + CSV): same figures, tidy cells."""
    analysis, _, html = report
    analysis.save(tmp_path / "analysis")
    loaded = render_report(Analysis.load(tmp_path / "analysis"))
    assert len(img_sources(loaded)) == len(img_sources(html)) == 6
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", loaded)
    assert len(cells) > 100 and not [c for c in cells if re.fullmatch(r"[-+]?\d+\.\d{5,}", c)]
    assert "ablation Δ test" in loaded and "tuning_only" in loaded


# -- the figures -----------------------------------------------------------------------------------------------
def test_figures_are_deterministic_pngs(report):
    _, _, first = report
    second = render_report(synthetic_analysis())  # a fresh build of the same tables: byte-identical page
    assert first == second
    assert len(img_sources(first)) == 6
    for src in img_sources(first):
        w, h = png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w >= 500 and h >= 150


def test_band_kinds_and_running_best():
    t = pd.DataFrame({"number": [0, 1, 2, 3, 4, 5, 6],
                      "state": ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "PRUNED", "COMPLETE", "RUNNING"],
                      "status": ["ok", "diverged", "cut", "stale", "pruned", "ok", None],
                      "value": [0.5, -np.inf, 0.09, np.nan, np.nan, 0.7, np.nan],
                      "optimizer": ["sgd", "adam", "adam", "sgd", "momentum", "adam", "sgd"]})
    assert plots.band_kind(t).tolist() == ["", "diverged", "cut", "failed", "pruned", "", None]
    assert plots.fitness_over_trials(t).png is not None


def test_correlation_grid_groups_levels_and_greys_small_cells():
    corr = pd.DataFrame([
        ("lr", "optimization", "all", 0.5, 0.01, 40), ("lr", "optimization", "adam", -0.2, 0.3, 12),
        ("flip", "data", "all", 0.1, 0.5, 40), ("flip", "data", "sgd", 0.9, 0.01, 31),
        ("dropout", "model", "momentum", -0.4, 0.1, 35), ("zoom", "data", "all", np.nan, np.nan, 40)],
        columns=["technique", "level", "group", "rho", "p", "n"])
    techniques, levels, groups, rho, n = plots.correlation_grid(corr, min_n=30)
    assert techniques == ["flip", "zoom", "dropout", "lr"]
    assert levels == ["data", "data", "model", "optimization"]
    assert groups == ["all", "sgd", "momentum", "adam"]
    assert rho[3, 3] != rho[3, 3] and n[3, 3] == 12  # n < min_n: NaN (grey), n kept for the label
    assert rho[0, 1] == 0.9 and rho[3, 0] == 0.5 and rho[2, 2] == -0.4
    assert np.isnan(rho[1, 0]) and np.isnan(rho[0, 2])


def test_failure_reasons_group_numbers():
    t = pd.DataFrame({"state": ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "PRUNED"],
                      "status": ["diverged", "diverged", "cut", "error", "ok", "pruned"],
                      "reason": ["nan loss at epoch 3", "nan loss at epoch 12", "val 0.09 < 0.12", None, None,
                                 None]})
    counts = plots.failure_counts(t)
    assert counts.to_dict() == {"diverged: nan loss at epoch #": 2, "cut: val # < #": 1, "error": 1}


def test_empty_and_degenerate_inputs_do_not_crash(tmp_path):
    html = write_report(empty_analysis(), tmp_path / "empty.html").read_text()
    assert img_sources(html) == []
    for sentence in ("No trials to plot.", "No correlations were computed.", "No importance was computed.",
                     "No failures", "Re-runs were skipped", "No trial has a finite fitness yet."):
        assert sentence in html, sentence
    # One finished trial, no failures, no re-runs: a fitness plot but "no failures" text, re-run sentences.
    one = synthetic_analysis(n_trials=1, failures=False, reruns=False)
    html = render_report(one)
    assert "No failures: every finished trial has status ok." in html
    assert "No correlation cell has n ≥ 10" in html
    assert "Re-runs were skipped" in html and "tuning_only" not in html
    assert len(img_sources(html)) == 4  # fitness, importance, scatter, histogram: no heat-map, no failures
    # All values equal (histogram of one value), all trials diverged (nothing at a value).
    flat = synthetic_analysis(n_trials=12, failures=False)
    flat.table["value"] = 0.5
    assert plots.fitness_histogram(flat.table).png is not None
    flat.table["value"], flat.table["status"] = -np.inf, "diverged"
    assert plots.fitness_over_trials(flat.table).png is not None
    assert plots.fitness_histogram(flat.table).png is None
    assert plots.strength_scatter(flat.table, flat.importance).png is None


# -- check 13 on a real study ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """A real 30-trial PSO study on digits (3 epochs), analysed with 2-seed re-runs, then reported."""
    from dicelab.study.analyze_study import analyze
    from dicelab.study.config import load_study_config
    from dicelab.study.runner import run_study

    root = tmp_path_factory.mktemp("real")
    cfg = load_study_config("examples/quick_digits.toml", [
        "study.n_trials=30", "study.pso.n_particles=6", "task.train.epochs=3", f"study.runs_dir={root / 'runs'}"])
    url = f"journal:{root / 'study.journal'}"
    run_study(cfg, url, quiet=True)
    analysis = analyze(url, cfg.study.name, out_dir=root / "analysis", seeds=2)
    path = write_report(analysis, root / "report.html")
    return analysis, path, path.read_text(encoding="utf-8")


def test_real_study_report_is_self_contained_and_opens_in_chromium(real_report, tmp_path):
    analysis, path, html = real_report
    assert analysis.header["trials_by_state"].get("COMPLETE") == 30
    srcs = img_sources(html)
    assert len(srcs) >= 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    for text in ("digits-quick", "tuning_only", "default"):
        assert text in html, text
    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium): static checks done, browser check skipped")
    with Chromium(find_chromium()) as browser:
        visit = browser.visit(path)
    assert visit.console_errors == [] and visit.requests == []
    assert visit.images_total == len(srcs) == visit.images_decoded
    shot = tmp_path / "real_report.png"
    shot.write_bytes(visit.screenshot)
    assert png_size(visit.screenshot)[1] > 2000
