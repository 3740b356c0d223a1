"""Study throughput (spec 02 §10, check 15): trials/min with 1 and 2 workers, and the PSO sampler's overhead.

1. **Workers.** The digits quick study (``examples/quick_digits.toml``, its budget shrunk with ``--n-trials``) runs
   on a journal file in a temporary directory, once with 1 worker and once with 2 (``run_study``: one worker in
   this process, the other spawned; the spawned one starts its first trial after importing torch). Printed per run: end-to-end wall time (process start-up included) and the steady rate = finished
   trials / (last completion - first start, from the stored trials), trials per minute, and the mean training
   time per trial (the PSO trajectories of 1 and 2 workers differ after the first iteration, so the trial mix
   can differ). Speed-up = steady rate with 2 workers / with 1. Target >= 1.7 (two cores, both free). The
   window includes the second worker's late start (printed): short runs (``--quick``) understate the speed-up.
2. **Sampler overhead.** Two journal studies over the quick study's 22-coordinate space are pre-filled with the
   same 2,000 COMPLETE trials (swarm trials with ``pso:*`` attributes and the runner's user attributes, added
   with ``study.add_trials``). Then ask -> ``space.suggest`` -> tell cycles are timed for ``PSOSampler`` (the
   study's sampler, 16 particles) on one and ``RandomSampler`` on the other, alternating in rounds (one warm-up
   cycle each first: PSO's first ask reads all 2,000 trials once, later asks only new ones). Printed: median
   ms per cycle of each, and the median of per-round ratios PSO / random. Target <= 2.0.

This machine's 2 cores are shared with other jobs, so the load average is printed before and after: a worker
speed-up needs two idle cores.

    python benchmarks/study_throughput.py [--quick] [--n-trials 60] [--stored 2000] [--cycles 200]
        [--repeats 1] [--storage journal|sqlite] [--skip-workers] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from dicelab.study.config import load_study_config
from dicelab.study.runner import run_study
from dicelab.study.samplers import make_sampler
from dicelab.study.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
QUICK_TOML = ROOT / "examples" / "quick_digits.toml"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# -- 1. trials per minute --------------------------------------------------------------------------------
def worker_run(tmp: Path, workers: int, n_trials: int) -> dict:
    name = f"throughput-{workers}w"
    cfg = load_study_config(QUICK_TOML, [f"study.n_trials={n_trials}", f"study.name={name}",
                                         f"study.runs_dir={tmp / 'runs'}"])
    url = f"journal:{tmp / f'{name}.journal'}"
    t0 = time.perf_counter()
    study = run_study(cfg, url, workers=workers, quiet=True)
    wall = time.perf_counter() - t0
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == n_trials, (len(done), n_trials)
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    window = (last - first).total_seconds()
    durations = [t.user_attrs["duration_s"] for t in done]
    starts: dict[str, float] = {}
    for t in done:
        w = t.user_attrs.get("worker")
        starts[w] = min(starts.get(w, math.inf), t.datetime_start.timestamp())
    statuses = {}
    for t in done:
        statuses[t.user_attrs.get("status")] = statuses.get(t.user_attrs.get("status"), 0) + 1
    return {"workers": workers, "wall_s": wall, "window_s": window, "per_min_wall": 60 * n_trials / wall,
            "per_min_steady": 60 * n_trials / window, "mean_train_s": statistics.fmean(durations),
            "train_s": sum(durations), "statuses": statuses,
            "surplus": sum(t.user_attrs.get("status") == "surplus" for t in trials),
            "workers_seen": len(starts), "start_skew_s": max(starts.values()) - min(starts.values())}


def bench_workers(n_trials: int, repeats: int) -> None:
    print(f"== trials/min: digits quick study, {n_trials} trials, journal file, {repeats} repeat(s) ({load()})")
    speedups = []
    with tempfile.TemporaryDirectory(prefix="dicelab-throughput-") as tmp:
        for rep in range(repeats):
            rows = {}
            for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):     # alternate the order between repeats
                r = worker_run(Path(tmp) / f"r{rep}", workers, n_trials)
                rows[workers] = r
                print(f"  {workers} worker(s): wall {r['wall_s']:6.1f} s ({r['per_min_wall']:6.1f} trials/min), "
                      f"steady {r['window_s']:6.1f} s ({r['per_min_steady']:6.1f} trials/min); mean training "
                      f"{r['mean_train_s']:.3f} s/trial (sum {r['train_s']:.1f} s); status {r['statuses']}; "
                      f"surplus {r['surplus']}; workers seen {r['workers_seen']} "
                      f"(first trials {r['start_skew_s']:.1f} s apart)   ({load()})")
            one, two = rows[1], rows[2]
            steady = two["per_min_steady"] / one["per_min_steady"]
            wall = two["per_min_wall"] / one["per_min_wall"]
            # The two runs' trials are not the same mix: also compare training-seconds per wall-second (how many
            # trainings ran at once) and the mean training time per trial (> 1: each trial ran slower).
            busy = (two["train_s"] / two["window_s"]) / (one["train_s"] / one["window_s"])
            slower = two["mean_train_s"] / one["mean_train_s"]
            speedups.append(steady)
            print(f"  repeat {rep}: speed-up 2 vs 1 worker: steady {steady:.2f}, end-to-end {wall:.2f}; trainings "
                  f"running at once {busy:.2f}; mean training time per trial x{slower:.2f} with 2 workers")
    best = statistics.median(speedups)
    verdict = "PASS" if best >= 1.7 else "FAIL"
    print(f"  speed-up (median over repeats of the steady rate ratio): {best:.2f} [{verdict}: target >= 1.7]")


# -- 2. sampler overhead -----------------------------------------------------------------------------------
def prefill(study: optuna.Study, space, n: int, particles: int, seed: int) -> None:
    """``n`` COMPLETE swarm trials: uniform positions, pso:* system attrs and the runner's user attrs."""
    rng = np.random.default_rng(seed)
    dists = space.distributions()
    vmax = 0.2 * (space.high - space.low)
    trials = []
    for number in range(n):
        u = rng.uniform(space.low, space.high)
        v = rng.uniform(-vmax, vmax)
        value = float(rng.uniform(0.1, 0.97))
        system = {"pso:p": number % particles, "pso:t": number // particles, "pso:x": [float(a) for a in u],
                  "pso:v": [float(a) for a in v], "pso:note": "move", "pso:repeat_of": None}
        user = {"status": "ok", "reason": None, "test_accuracy": value - 0.01, "value_seeds": [value],
                "test_accuracy_seeds": [value - 0.01], "worker": "bench:1", "heartbeat": time.time(),
                "duration_s": 0.5, "epochs": 20, "record": f"runs/bench/trials/{number}.json"}
        trials.append(optuna.trial.create_trial(params=space.params(u), distributions=dists, value=value,
                                                system_attrs=system, user_attrs=user))
    study.add_trials(trials)


def cycle(study: optuna.Study, space, rng: np.random.Generator) -> float:
    """One ask -> suggest -> tell; returns its wall time."""
    t0 = time.perf_counter()
    trial = study.ask()
    space.suggest(trial)
    study.tell(trial, float(rng.uniform(0.1, 0.97)))
    return time.perf_counter() - t0


def bench_overhead(kind: str, stored: int, cycles: int, rounds: int) -> None:
    cfg = load_study_config(QUICK_TOML)
    space = cfg.space()
    particles = cfg.study.pso.n_particles
    print(f"== ask+tell overhead at {stored} stored trials, {kind} storage, {len(space.names)} coordinates, "
          f"{cycles} cycles per sampler in {rounds} alternating rounds ({load()})")
    with tempfile.TemporaryDirectory(prefix="dicelab-overhead-") as tmp:
        studies = {}
        for name in ("pso", "random"):
            url = (f"journal:{Path(tmp) / f'{name}.journal'}" if kind == "journal"
                   else f"sqlite:///{Path(tmp) / f'{name}.db'}")
            t0 = time.perf_counter()
            filler = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
            filler.set_user_attr("dicelab:space", space.to_json())
            prefill(filler, space, stored, particles, seed=1)
            fill_s = time.perf_counter() - t0
            sampler = (make_sampler("pso", space, seed=0, pso_options=cfg.study.pso.model_dump())
                       if name == "pso" else optuna.samplers.RandomSampler(seed=0))
            study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=sampler)
            first = cycle(study, space, np.random.default_rng(0))     # warm-up: the sampler reads every trial
            studies[name] = study
            print(f"  {name:6s}: pre-fill {fill_s:5.1f} s; first (cold) ask+tell {1000 * first:7.1f} ms")
        per_round = max(1, cycles // rounds)
        times: dict[str, list[float]] = {"pso": [], "random": []}
        ratios = []
        rng = np.random.default_rng(1)
        for r in range(rounds):
            order = ("pso", "random") if r % 2 == 0 else ("random", "pso")
            means = {}
            for name in order:
                ts = [cycle(studies[name], space, rng) for _ in range(per_round)]
                times[name] += ts
                means[name] = statistics.fmean(ts)
            ratios.append(means["pso"] / means["random"])
        pso_ms, rnd_ms = 1000 * statistics.median(times["pso"]), 1000 * statistics.median(times["random"])
        ratio = statistics.median(ratios)
        swarm = studies["pso"].sampler.swarm(studies["pso"])
        assert swarm.n_swarm_trials == stored + 1 + len(times["pso"]), swarm.n_swarm_trials
        verdict = "PASS" if ratio <= 2.0 else "FAIL"
        print(f"  median per cycle: PSO {pso_ms:.2f} ms, random {rnd_ms:.2f} ms; PSO / random "
              f"{ratio:.2f} (median of {rounds} round ratios; per-cycle medians give {pso_ms / rnd_ms:.2f}) "
              f"[{verdict}: target <= 2.0]   ({load()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 trials, 1,000 stored, 100 cycles")
    ap.add_argument("--n-trials", type=int, default=None,
                    help="study budget of the worker runs (default 160, the quick study's own budget)")
    ap.add_argument("--stored", type=int, default=None, help="trials stored before timing (default 2000)")
    ap.add_argument("--cycles", type=int, default=None, help="timed ask+tell cycles per sampler (default 200)")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds of the overhead timing")
    ap.add_argument("--repeats", type=int, default=1, help="1-worker / 2-worker run pairs (median speed-up)")
    ap.add_argument("--storage", choices=("journal", "sqlite"), default="journal")
    ap.add_argument("--skip-workers", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    n_trials = args.n_trials or (60 if args.quick else 160)
    stored = args.stored or (1000 if args.quick else 2000)
    cycles = args.cycles or (100 if args.quick else 200)
    if not args.skip_overhead:
        bench_overhead(args.storage, stored, cycles, args.rounds)
    if not args.skip_workers:
        bench_workers(n_trials, args.repeats)


if __name__ == "__main__":
    main()
