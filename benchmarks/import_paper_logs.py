"""Import the reference logs into a journal file and check the stored studies against the DataFrame path
(spec 02 §10, check 12).

1. ``import_paper_logs`` of all rows (31,175 without the demo file) into one storage; prints rows/s
   (target: every row in < 300 s).
2. For each study ``paper-<arch>-<dataset>``: reopen the storage, build ``trials_table`` and compare it cell
   by cell with ``read_paper_logs``; then compare summary, Spearman correlations and PED-ANOVA importances
   computed from both. When the lead's ``analyze`` exists it is run on the stored study (no re-runs) and its
   tables are compared too.

    python benchmarks/import_paper_logs.py [--csv PATH] [--storage URL] [--include-demo]

The default storage is a journal file in a fresh temporary folder (removed afterwards). Exit status 1 if
any comparison fails.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd

from dicelab.study import analysis as analysis_module
from dicelab.study.analysis import correlations, importance, summarize, trials_table
from dicelab.study.paper_logs import find_reference_data, import_paper_logs, read_paper_logs
from dicelab.study.storage import open_storage

DEFAULT_CSV = (find_reference_data(Path(__file__).resolve()) or Path(__file__).resolve().parents[2] / "shared" / "data") \
    / "rolling_dice_configs.csv.gz"
TARGET_S = 300.0


def _same(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """None when equal (exactly), else the first difference in one line."""
    try:
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)
    except AssertionError as exc:
        return " ".join(str(exc).split())[:300]
    return None


def _compare_analyze(url: str, name: str, rows: pd.DataFrame) -> list[str]:
    """Run the lead's ``analyze`` (if present) on the stored study and compare with the DataFrame path."""
    from dicelab.study.analysis import analyze

    with tempfile.TemporaryDirectory() as out:
        result = analyze(url, name, out_dir=out, rerun=False)
    notes = []
    for label, stored, direct in (("summary", result.summary, summarize(rows)),
                                  ("correlations", result.correlations, correlations(rows)),
                                  ("importance", result.importance, importance(rows))):
        diff = _same(stored, direct)
        notes.append(f"analyze {label}: {'equal' if diff is None else 'DIFFERENT: ' + diff}")
    return notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--storage", default=None, help="storage URL (default: journal file in a temp folder)")
    ap.add_argument("--include-demo", action="store_true")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    tmp = None
    url = args.storage
    if url is None:
        tmp = tempfile.TemporaryDirectory()
        url = f"journal:{Path(tmp.name) / 'paper.journal'}"
    failures = 0
    try:
        t0 = time.perf_counter()
        table = read_paper_logs(args.csv, include_demo=args.include_demo)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        names = import_paper_logs(args.csv, url, include_demo=args.include_demo)
        t_import = time.perf_counter() - t0
        rows = len(table)
        print(f"read_paper_logs: {rows:,} rows in {t_read:.2f} s")
        verdict = "OK" if t_import < TARGET_S else "OVER TARGET"
        print(f"import_paper_logs: {rows:,} rows into {len(names)} studies in {t_import:.1f} s "
              f"= {rows / t_import:,.0f} rows/s (target: all rows < {TARGET_S:.0f} s: {verdict})")
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            print(f"journal file: {os.path.getsize(path) / 1e6:.1f} MB")
        has_analyze = hasattr(analysis_module, "analyze")
        if not has_analyze:
            print("dicelab.study.analysis.analyze is not available yet: comparing trials_table, summarize, "
                  "correlations and importance only")
        storage = open_storage(url)               # a fresh reader, as another process would open it
        print(f"{'study':28s} {'rows':>7s} {'table s':>8s}  table  summary  corr  importance")
        for name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            t0 = time.perf_counter()
            stored = trials_table(study)
            t_table = time.perf_counter() - t0
            direct = table[table["arch_dataset"] == name.removeprefix("paper-")].reset_index(drop=True)
            checks = {
                "table": _same(stored, direct),
                "summary": _same(summarize(stored), summarize(direct)),
                "corr": _same(correlations(stored), correlations(direct)),
                "importance": _same(importance(stored), importance(direct)),
            }
            marks = ["ok" if v is None else "DIFF" for v in checks.values()]
            print(f"{name:28s} {len(stored):7,d} {t_table:8.2f}  {marks[0]:5s}  {marks[1]:7s}  {marks[2]:4s}  {marks[3]}")
            for key, diff in checks.items():
                if diff is not None:
                    failures += 1
                    print(f"  {key}: {diff}")
            for note in _compare_analyze(url, name, direct) if has_analyze else []:
                failures += "DIFFERENT" in note
                print(f"  {note}")
        print("all stored studies equal the DataFrame path" if failures == 0 else f"{failures} comparison(s) FAILED")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
