"""The randomness study (spec 02): search space, PSO sampler, workers on shared storage, analysis, report.

The pieces, each swappable: :class:`SearchSpace` (from the catalog registry), samplers by name
(:func:`make_sampler`, :class:`PSOSampler`), storages by URL (:func:`open_storage`), the worker loop
(:func:`run_study`, :func:`run_worker`), :func:`analyze` and :func:`write_report`.

Names are imported on first use (PEP 562), so ``dicelab --help`` does not pay for Optuna, pandas and
matplotlib.
"""

from importlib import import_module

_WHERE = {
    "Analysis": "analysis", "correlations": "analysis", "importance": "analysis", "summarize": "analysis",
    "trials_table": "analysis", "analyze": "analyze_study", "StudyConfig": "config", "load_study_config": "config",
    "import_paper_logs": "paper_logs", "read_paper_logs": "paper_logs", "PSOSampler": "pso",
    "write_report": "report", "create_study": "runner", "load_study": "runner", "run_study": "runner",
    "run_worker": "runner", "make_sampler": "samplers", "SearchSpace": "space", "open_storage": "storage",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"dicelab.study.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dicelab.study' has no attribute {name!r}")
