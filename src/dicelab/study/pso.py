"""Particle swarm optimisation as an Optuna sampler whose whole state lives in the study storage (spec 02 §3).

There is no swarm object in any process. Every quantity the update needs is derived from stored trials:

* **Who am I.** A fresh trial ``n`` gets the swarm index ``s = n - (non-swarm trials with a smaller number)``;
  particle ``p = s mod P``, iteration ``t = s div P`` (after ``prescreen`` screening trials, which take the first
  swarm indices). Trial numbers are assigned atomically by the storage, so two workers never share a (p, t).
  Non-swarm trials are enqueued ones (system attr ``fixed_params``), Optuna retries (``failed_trial``) and trials
  added directly in a finished state (``study.add_trial``: start time equal to completion time).
* **Where was I.** Trial (p, t) moves from the position ``pso:x`` and velocity ``pso:v`` stored on trial
  (p, t-1), which may still be running (asynchronous PSO). If that trial has no stored position after ``wait_s``
  seconds (its worker died between creating and sampling it), the particle restarts from its personal best, or a
  fresh sparse draw, and says so in ``pso:note``.
* **Where is best.** pbest(p) = best COMPLETE trial of particle p; gbest = best COMPLETE trial of the study,
  enqueued trials included (their position is ``space.coordinates(params)``). FAIL, PRUNED, non-finite values and
  the low-fidelity prescreen trials never become pbest or gbest. Ties go to the smaller trial number.
* **Randomness.** All draws of trial (p, t) come from ``numpy.random.default_rng([seed, p, t])``: first the
  initial position (``space.sample_sparse``) and velocity at t = 0 (or a restart), else r1 then r2, one per
  coordinate. With one worker a study is bit-reproducible, and an interrupted study resumed by another process
  continues exactly as if it had never stopped.

Update, per coordinate j (Clerc-Kennedy constriction defaults)::

    v <- w v + c1 r1 (pbest_j - x_j) + c2 r2 (gbest_j - x_j);  v <- clip(v, +-clamp (hi_j - lo_j));
    x <- clip(x + v, lo_j, hi_j)

Stored on each swarm trial (system attrs): ``pso:p``, ``pso:t``, ``pso:x``, ``pso:v`` (JSON float lists; a list
whose JSON exceeds 2,000 characters, the RDB limit, is split into string chunks ``pso:x:0``, ``pso:x:1``, ...),
``pso:note`` and ``pso:repeat_of`` (the earliest trial with the same decoded parameters, or None: identical
positions are re-evaluated on purpose, fitness is noisy). Prescreen trials carry ``pso:prescreen = True`` and
``pso:t = -1``. The sampler never reads user attrs (in particular not ``test_accuracy``).
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dicelab.errors import ConfigError

__all__ = ["PSOSampler", "SwarmState", "ParticleState", "Best", "pso_step", "read_floats", "write_floats",
           "is_swarm_trial", "box_space", "ATTR_P", "ATTR_T", "ATTR_X", "ATTR_V", "ATTR_NOTE", "ATTR_REPEAT",
           "ATTR_PRESCREEN", "MAX_ATTR_CHARS"]

ATTR_P, ATTR_T, ATTR_X, ATTR_V = "pso:p", "pso:t", "pso:x", "pso:v"
ATTR_NOTE, ATTR_REPEAT, ATTR_PRESCREEN = "pso:note", "pso:repeat_of", "pso:prescreen"
MAX_ATTR_CHARS = 2000          # Optuna's RDB storage keeps attribute JSON in a column of this size
_CHUNK = MAX_ATTR_CHARS - 10   # a chunk is stored as a JSON string: two quotes, no escapes in a float list
_PRESCREEN_STREAM = 2**63 - 1  # the "iteration" key of prescreen draws; swarm iterations never reach it
_POLL_S = 0.05
SPACE_ATTR = "dicelab:space"   # study user attr holding SearchSpace.to_json() (written by the runner)


# -- attribute encoding ---------------------------------------------------------------------------------
def write_floats(storage: optuna.storages.BaseStorage, trial_id: int, key: str, values: Sequence[float]) -> None:
    """Store a float list as system attr ``key``; chunked as ``key:0``, ``key:1``, ... beyond 2,000 characters.

    JSON writes floats with ``repr``, which round-trips exactly, so stored positions are bit-exact."""
    values = [float(v) for v in values]
    text = json.dumps(values, allow_nan=False)
    if len(text) <= MAX_ATTR_CHARS:
        storage.set_trial_system_attr(trial_id, key, values)
        return
    # A reader that sees only some chunks gets a JSON prefix without its closing bracket: invalid, so "not yet".
    for i, start in enumerate(range(0, len(text), _CHUNK)):
        storage.set_trial_system_attr(trial_id, f"{key}:{i}", text[start:start + _CHUNK])


def read_floats(attrs: Mapping[str, Any], key: str) -> np.ndarray | None:
    """The float list stored under ``key`` (plain or chunked), or None if absent or still being written."""
    if key in attrs:
        value = attrs[key]
        return None if value is None else np.asarray(value, dtype=np.float64)
    chunks = []
    while f"{key}:{len(chunks)}" in attrs:
        chunks.append(attrs[f"{key}:{len(chunks)}"])
    if not chunks:
        return None
    try:
        return np.asarray(json.loads("".join(chunks)), dtype=np.float64)
    except ValueError:
        return None


def is_swarm_trial(trial: FrozenTrial) -> bool:
    """Whether ``trial`` takes a swarm slot: False for enqueued, retried and directly added trials.

    The answer never changes over a trial's life, so every process derives the same swarm indices."""
    attrs = trial.system_attrs
    if "fixed_params" in attrs or "failed_trial" in attrs or trial.state == TrialState.WAITING:
        return False
    # study.add_trial(create_trial(...)) in a finished state: optuna sets start == complete; an asked trial
    # always starts RUNNING and completes later.
    if (trial.state.is_finished() and ATTR_P not in attrs and trial.datetime_start is not None
            and trial.datetime_start == trial.datetime_complete):
        return False
    return True


# -- the update -------------------------------------------------------------------------------------------
def pso_step(x: np.ndarray, v: np.ndarray, pbest: np.ndarray, gbest: np.ndarray, low: np.ndarray,
             high: np.ndarray, rng: np.random.Generator, *, inertia: float = 0.7298, cognitive: float = 1.49618,
             social: float = 1.49618, velocity_clamp: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """One global-best PSO step of one particle; draws r1 then r2 (one per coordinate) from ``rng``.

    Returns the new position (clipped to [low, high]) and velocity (clamped to +-velocity_clamp * range)."""
    r1 = rng.random(x.shape[0])
    r2 = rng.random(x.shape[0])
    vmax = velocity_clamp * (high - low)
    v_new = inertia * v + cognitive * r1 * (pbest - x) + social * r2 * (gbest - x)
    v_new = np.clip(v_new, -vmax, vmax)
    x_new = np.clip(x + v_new, low, high)
    return x_new, v_new


# -- a plain dict of distributions as a space -------------------------------------------------------------
class _BoxSpace:
    """A dict of Optuna distributions seen as a box in coordinate space (no optional techniques).

    Float: the value (log=True: its log10); Int: the value (log: log10), rounded on decode; Categorical: the
    choice index, cells [i - 0.5, i + 0.5)."""

    def __init__(self, distributions: Mapping[str, BaseDistribution]) -> None:
        if not distributions:
            raise ValueError("PSOSampler: the search space is empty")
        self._dists = dict(distributions)
        self.names = list(self._dists)
        low, high, kinds = [], [], []
        for name, d in self._dists.items():
            if isinstance(d, FloatDistribution) and d.step is None:
                kinds.append("log" if d.log else "linear")
                low.append(math.log10(d.low) if d.log else d.low)
                high.append(math.log10(d.high) if d.log else d.high)
            elif isinstance(d, IntDistribution) and d.step == 1:
                kinds.append("int_log" if d.log else "int")
                low.append(math.log10(d.low) if d.log else float(d.low))
                high.append(math.log10(d.high) if d.log else float(d.high))
            elif isinstance(d, CategoricalDistribution):
                kinds.append("categorical")
                low.append(-0.5)
                high.append(len(d.choices) - 0.5)
            else:
                raise ValueError(f"PSOSampler: parameter {name!r}: unsupported distribution {d!r} "
                                 "(Float without step, Int with step 1, Categorical)")
        self._kinds = kinds
        self.low = np.array(low, dtype=np.float64)
        self.high = np.array(high, dtype=np.float64)
        self.optional = np.zeros(len(self.names), dtype=bool)

    def distributions(self) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def params(self, u: Sequence[float] | np.ndarray) -> dict[str, Any]:
        u = np.clip(np.asarray(u, dtype=np.float64), self.low, self.high)
        out: dict[str, Any] = {}
        for (name, d), kind, x in zip(self._dists.items(), self._kinds, u, strict=True):
            if kind == "linear":
                out[name] = float(x)
            elif kind == "log":
                out[name] = float(min(max(10.0 ** x, d.low), d.high))
            elif kind in ("int", "int_log"):
                value = 10.0 ** x if kind == "int_log" else x
                out[name] = int(min(max(math.floor(value + 0.5), d.low), d.high))
            else:
                out[name] = d.choices[min(max(math.floor(x + 0.5), 0), len(d.choices) - 1)]
        return out

    def coordinates(self, params: Mapping[str, Any]) -> np.ndarray:
        out = []
        for (name, d), kind in zip(self._dists.items(), self._kinds, strict=True):
            value = params[name]
            if kind == "categorical":
                out.append(float(d.to_internal_repr(value)))
            elif kind in ("log", "int_log"):
                out.append(math.log10(value))
            else:
                out.append(float(value))
        return np.array(out, dtype=np.float64)

    def sample_sparse(self, rng: np.random.Generator, k: int | None) -> np.ndarray:
        if k:
            raise ValueError("PSOSampler: a plain dict of distributions has no optional techniques; "
                             "use sparse_k=None")
        return rng.uniform(self.low, self.high)


def box_space(distributions: Mapping[str, BaseDistribution]) -> Any:
    """The coordinate view of a plain dict of distributions (what :class:`PSOSampler` uses for one)."""
    return _BoxSpace(distributions)


# -- read-only view ----------------------------------------------------------------------------------------
def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Best:
    """A best trial: its number, objective value and position."""

    number: int
    value: float
    x: np.ndarray


@dataclass(frozen=True)
class ParticleState:
    """The latest stored position of one particle."""

    p: int
    t: int
    number: int
    state: TrialState
    x: np.ndarray
    v: np.ndarray
    value: float | None


@dataclass(frozen=True)
class SwarmState:
    """What the stored trials say about the swarm (a snapshot; changing it changes nothing)."""

    n_particles: int
    n_prescreen: int                          # prescreen trials created so far
    n_swarm_trials: int                       # swarm trials created so far (prescreen excluded)
    particles: tuple[ParticleState | None, ...]
    pbest: tuple[Best | None, ...]
    gbest: Best | None
    iterations_done: int                      # leading iterations whose P trials have all finished
    stall: int                                # of those, how many of the latest brought no gbest improvement


# -- what the sampler remembers about one trial ----------------------------------------------------------
class _Record:
    __slots__ = ("number", "trial_id", "swarm", "prescreen", "s", "p", "t", "x", "v", "score", "finished",
                 "state", "value")

    def __init__(self, number: int, trial_id: int) -> None:
        self.number, self.trial_id = number, trial_id
        self.swarm = self.prescreen = self.finished = False
        self.s = self.p = self.t = -1
        self.x: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.score: float | None = None      # finite COMPLETE value, sign-flipped when minimising
        self.state = TrialState.RUNNING
        self.value: float | None = None


class _Candidate:
    """(score, number, x) ordered by score, ties to the smaller trial number."""

    __slots__ = ("score", "number", "x")

    def __init__(self, score: float, number: int, x: np.ndarray) -> None:
        self.score, self.number, self.x = score, number, x

    def beats(self, other: _Candidate | None) -> bool:
        return other is None or self.score > other.score or (self.score == other.score and
                                                              self.number < other.number)


class _StudyCache:
    """Everything derived from one study's trials; finished trials are processed once (an ask is O(new))."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int) -> None:
        self.storage, self.study_id = storage, study_id
        self.records: list[_Record] = []
        self.swarm_numbers: list[int] = []          # swarm index -> trial number (prescreen first)
        self.pending: set[int] = set()              # trial numbers seen unfinished
        self.pbest: dict[int, _Candidate] = {}
        self.gbest: _Candidate | None = None
        self.prescreened: list[_Candidate] = []     # finished prescreen trials with a finite value
        self.iter_finished: dict[int, int] = {}
        self.iter_best: dict[int, float] = {}
        self.nonswarm_scores: list[tuple[int, float]] = []
        self.repeat_index: dict[tuple, int] = {}    # decoded params -> smallest trial number


class PSOSampler(BaseSampler):
    """Global-best particle swarm whose state is the study's stored trials (see the module docstring).

    ``space``: a :class:`dicelab.study.space.SearchSpace`, a plain dict of Optuna distributions (then
    ``sparse_k`` must be None), or None to read the SearchSpace stored in the study's user attr
    ``dicelab:space``. ``max_iterations`` and ``patience`` (iterations without gbest improvement) only make
    :meth:`should_stop` say so; the caller decides to stop.
    """

    def __init__(self, space: Any = None, *, n_particles: int = 20, inertia: float = 0.7298,
                 cognitive: float = 1.49618, social: float = 1.49618, velocity_clamp: float = 0.2,
                 sparse_k: int | None = 4, prescreen: int = 0, max_iterations: int | None = None,
                 patience: int | None = None, wait_s: float = 10.0, seed: int | None = None) -> None:
        def bad(field: str, rule: str, value: Any) -> ConfigError:
            return ConfigError(f"PSOSampler: {field} must be {rule} (got {value!r})")

        def is_int(value: Any) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        if not is_int(n_particles) or n_particles < 1:
            raise bad("n_particles", "an integer >= 1", n_particles)
        for name, value in (("inertia", inertia), ("cognitive", cognitive), ("social", social)):
            if not math.isfinite(float(value)):
                raise bad(name, "finite", value)
        if not float(velocity_clamp) > 0:
            raise bad("velocity_clamp", "> 0", velocity_clamp)
        if sparse_k is not None and (not is_int(sparse_k) or sparse_k < 0):
            raise bad("sparse_k", "None or an integer >= 0", sparse_k)
        if not is_int(prescreen) or prescreen < 0:
            raise bad("prescreen", "an integer >= 0", prescreen)
        if 0 < prescreen < n_particles:
            raise bad("prescreen", f"0 or at least n_particles = {n_particles} (particles start at the best "
                      "P prescreen trials)", prescreen)
        for name, value in (("max_iterations", max_iterations), ("patience", patience)):
            if value is not None and (not is_int(value) or value < 1):
                raise bad(name, "None or an integer >= 1", value)
        if not float(wait_s) >= 0:
            raise bad("wait_s", ">= 0", wait_s)
        if seed is not None and (not is_int(seed) or seed < 0):
            raise bad("seed", "None or an integer >= 0", seed)

        if isinstance(space, Mapping):
            if sparse_k is not None:
                raise ConfigError("PSOSampler: a plain dict of distributions has no optional techniques; "
                                  "pass sparse_k=None")
            space = _BoxSpace(space)
        self._space = space
        self.n_particles = int(n_particles)
        self.inertia, self.cognitive, self.social = float(inertia), float(cognitive), float(social)
        self.velocity_clamp = float(velocity_clamp)
        self.sparse_k = None if sparse_k is None else int(sparse_k)
        self.prescreen = int(prescreen)
        self.max_iterations = None if max_iterations is None else int(max_iterations)
        self.patience = None if patience is None else int(patience)
        self.wait_s = float(wait_s)
        # No seed: a fresh one per process. The swarm still works across processes, but is not reproducible.
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self._lock = threading.RLock()
        self._caches: dict[tuple[int, int], _StudyCache] = {}
        self._spaces: dict[tuple[int, int], Any] = {}
        self._positions: dict[tuple[int, int], np.ndarray] = {}   # (storage, trial_id) -> x, until sampled

    # -- Optuna hooks ------------------------------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.space(study).distributions()

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._lock:
            x = self._positions.pop((id(study._storage), trial._trial_id), None)
        if x is None:        # another process made the position (or this is a non-swarm trial)
            attrs = study._storage.get_trial_system_attrs(trial._trial_id)
            if "fixed_params" in attrs or "failed_trial" in attrs:
                return {}
            x = read_floats(attrs, ATTR_X)
            if x is None:
                return {}
        params = self.space(study).params(x)
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # Only parameters outside the declared space, or missing from an enqueued trial, land here: a random
        # value, reproducible per (seed, trial number, name).
        seed = np.random.SeedSequence([self.seed, trial.number, zlib.crc32(param_name.encode())])
        sampler = RandomSampler(seed=int(seed.generate_state(1)[0]))
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Assign (p, t) to a fresh trial, compute its position and store the ``pso:*`` attributes."""
        storage = study._storage
        if len(study.directions) != 1:
            # Fail the just-created trial so it does not linger as RUNNING.
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            raise ValueError(f"PSOSampler supports single-objective studies only; this study has "
                             f"{len(study.directions)} objectives")
        with self._lock:
            space = self.space(study)
            cache = self._cache(study)
            self._sync(study, cache)
            rec = cache.records[trial.number]
            if not rec.swarm:
                if ATTR_P in trial.system_attrs:   # an Optuna retry copies the failed trial's pso:* attrs
                    storage.set_trial_system_attr(trial._trial_id, ATTR_P, None)
                    storage.set_trial_system_attr(trial._trial_id, ATTR_T, None)
                    storage.set_trial_system_attr(trial._trial_id, ATTR_NOTE, "non-swarm trial (retry)")
                return
            stored = read_floats(trial.system_attrs, ATTR_X)
            if stored is not None:           # before_trial called twice for one trial: keep what is stored
                self._positions[(id(storage), trial._trial_id)] = stored
                return
            x, v, note = self._position(study, cache, rec, space)
            key = self._key(space, x)
            repeat_of = cache.repeat_index.get(key)
            storage.set_trial_system_attr(trial._trial_id, ATTR_P, rec.p)
            storage.set_trial_system_attr(trial._trial_id, ATTR_T, rec.t)
            if rec.prescreen:
                storage.set_trial_system_attr(trial._trial_id, ATTR_PRESCREEN, True)
            storage.set_trial_system_attr(trial._trial_id, ATTR_NOTE, note)
            storage.set_trial_system_attr(trial._trial_id, ATTR_REPEAT, repeat_of)
            if v is not None:
                write_floats(storage, trial._trial_id, ATTR_V, v)
            write_floats(storage, trial._trial_id, ATTR_X, x)   # last: its presence means "position stored"
            rec.x, rec.v = x, v
            if repeat_of is None:
                cache.repeat_index[key] = rec.number
            self._positions[(id(storage), trial._trial_id)] = x

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        with self._lock:   # a trial whose objective suggested nothing never collected its position
            self._positions.pop((id(study._storage), trial._trial_id), None)

    # -- public views ------------------------------------------------------------------------------------
    def space(self, study: optuna.Study) -> Any:
        """The space this sampler searches in ``study`` (the constructor's, or the one stored in the study)."""
        if self._space is not None:
            return self._space
        key = (id(study._storage), study._study_id)
        with self._lock:
            if key not in self._spaces:
                text = study._storage.get_study_user_attrs(study._study_id).get(SPACE_ATTR)
                if text is None:
                    raise ConfigError(f"PSOSampler: no space given and study {study.study_name!r} has no "
                                      f"{SPACE_ATTR!r} user attr")
                from dicelab.study.space import SearchSpace

                self._spaces[key] = SearchSpace.from_json(text)
            return self._spaces[key]

    def swarm(self, study: optuna.Study) -> SwarmState:
        """A read-only snapshot of the swarm: latest position per particle, pbest, gbest, progress."""
        with self._lock:
            cache = self._cache(study)
            self._sync(study, cache)
            P = self.n_particles
            latest: list[_Record | None] = [None] * P
            for number in cache.swarm_numbers[self.prescreen:]:
                rec = cache.records[number]
                if rec.x is not None and rec.v is not None:
                    latest[rec.p] = rec
            sign = self._sign(study)
            particles = tuple(None if r is None else ParticleState(
                r.p, r.t, r.number, r.state, _frozen(r.x), _frozen(r.v), r.value) for r in latest)

            def best(c: _Candidate | None) -> Best | None:
                return None if c is None else Best(c.number, sign * c.score, _frozen(c.x))

            done, stall = self._progress(cache)
            return SwarmState(
                n_particles=P, n_prescreen=min(len(cache.swarm_numbers), self.prescreen),
                n_swarm_trials=max(0, len(cache.swarm_numbers) - self.prescreen), particles=particles,
                pbest=tuple(best(cache.pbest.get(p)) for p in range(P)), gbest=best(cache.gbest),
                iterations_done=done, stall=stall)

    def should_stop(self, study: optuna.Study) -> bool:
        """True once ``max_iterations`` iterations have all been asked, or the last ``patience`` finished
        iterations brought no gbest improvement."""
        with self._lock:
            cache = self._cache(study)
            self._sync(study, cache)
            asked = len(cache.swarm_numbers) - self.prescreen
            if self.max_iterations is not None and asked >= self.n_particles * self.max_iterations:
                return True
            if self.patience is not None and self._progress(cache)[1] >= self.patience:
                return True
            return False

    # -- state from storage ---------------------------------------------------------------------------------
    @staticmethod
    def _sign(study: optuna.Study) -> float:
        return 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0

    def _cache(self, study: optuna.Study) -> _StudyCache:
        key = (id(study._storage), study._study_id)
        cache = self._caches.get(key)
        if cache is None or cache.storage is not study._storage:
            cache = self._caches[key] = _StudyCache(study._storage, study._study_id)
        return cache

    def _sync(self, study: optuna.Study, cache: _StudyCache) -> None:
        """Bring the cache up to date: classify new trials, absorb newly finished ones."""
        # The storage directly (= study.get_trials(deepcopy=False)), because a Hyperband pruner hands samplers a
        # study that shows only one bracket's trials, and the swarm needs all of them.
        trials = cache.storage.get_all_trials(cache.study_id, deepcopy=False)
        if trials and trials[-1].number != len(trials) - 1:
            trials = sorted(trials, key=lambda tr: tr.number)
        sign = self._sign(study)
        for trial in trials[len(cache.records):]:
            rec = _Record(trial.number, trial._trial_id)
            rec.swarm = is_swarm_trial(trial)
            if rec.swarm:
                rec.s = len(cache.swarm_numbers)
                cache.swarm_numbers.append(rec.number)
                if rec.s < self.prescreen:
                    rec.prescreen, rec.p, rec.t = True, rec.s, -1
                else:
                    rec.p, rec.t = divmod(rec.s - self.prescreen, self.n_particles)[::-1]
            cache.records.append(rec)
            cache.pending.add(rec.number)
        for number in sorted(cache.pending):
            rec, trial = cache.records[number], trials[number]
            if trial.state.is_finished():
                cache.pending.discard(number)
                self._absorb(study, cache, rec, trial, sign)
            elif rec.swarm and rec.x is None:
                self._read_position(study, cache, rec, trial.system_attrs)

    def _read_position(self, study: optuna.Study, cache: _StudyCache, rec: _Record, attrs: Mapping[str, Any]) -> None:
        x = read_floats(attrs, ATTR_X)
        if x is None:
            return
        rec.x, rec.v = x, read_floats(attrs, ATTR_V)
        key = self._key(self.space(study), x)
        if key not in cache.repeat_index or cache.repeat_index[key] > rec.number:
            cache.repeat_index[key] = rec.number

    def _absorb(self, study: optuna.Study, cache: _StudyCache, rec: _Record, trial: FrozenTrial,
                sign: float) -> None:
        rec.finished, rec.state = True, trial.state
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            rec.value = float(trial.value)
            if math.isfinite(rec.value):
                rec.score = sign * rec.value
        space = self.space(study)
        if rec.swarm:
            if rec.x is None:
                self._read_position(study, cache, rec, trial.system_attrs)
        else:
            try:   # a known configuration may lie outside the bounds: the swarm pulls towards its clipped image
                rec.x = np.clip(np.asarray(space.coordinates(trial.params), dtype=np.float64), space.low, space.high)
            except (KeyError, ValueError, TypeError):    # params from another space: cannot seed the swarm
                rec.x = None
            if rec.x is not None:
                key = self._key(space, rec.x)
                if key not in cache.repeat_index or cache.repeat_index[key] > rec.number:
                    cache.repeat_index[key] = rec.number
            if rec.score is not None:
                cache.nonswarm_scores.append((rec.number, rec.score))
        if rec.swarm and not rec.prescreen:
            cache.iter_finished[rec.t] = cache.iter_finished.get(rec.t, 0) + 1
            if rec.score is not None and rec.score > cache.iter_best.get(rec.t, -math.inf):
                cache.iter_best[rec.t] = rec.score
        if rec.score is None or rec.x is None:
            return
        cand = _Candidate(rec.score, rec.number, rec.x)
        if rec.prescreen:
            cache.prescreened.append(cand)
            return
        if cand.beats(cache.gbest):
            cache.gbest = cand
        if rec.swarm and cand.beats(cache.pbest.get(rec.p)):
            cache.pbest[rec.p] = cand

    def _progress(self, cache: _StudyCache) -> tuple[int, int]:
        """(leading fully finished iterations, how many of the latest of them did not improve gbest)."""
        P = self.n_particles
        done = 0
        while cache.iter_finished.get(done, 0) >= P:
            done += 1
        nonswarm = sorted(cache.nonswarm_scores)
        i, best, stall = 0, -math.inf, 0
        for t in range(done):
            first = cache.swarm_numbers[self.prescreen + t * P]
            while i < len(nonswarm) and nonswarm[i][0] < first:     # enqueued results raise the bar
                best = max(best, nonswarm[i][1])
                i += 1
            it_best = cache.iter_best.get(t, -math.inf)
            if it_best > best:
                best, stall = it_best, 0
            else:
                stall += 1
        return done, stall

    @staticmethod
    def _key(space: Any, x: np.ndarray) -> tuple:
        return tuple(repr(v) for v in space.params(x).values())

    # -- the position of a new swarm trial ------------------------------------------------------------------
    def _sparse_k(self, space: Any) -> int | None:
        if self.sparse_k is None:
            return None
        return min(self.sparse_k, int(np.count_nonzero(space.optional)))

    def initial_state(self, space: Any, p: int, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The fresh draw of particle p at iteration t (t = 0, or a restart): x = sample_sparse, then v."""
        rng = np.random.default_rng([self.seed, p, t])
        x = np.asarray(space.sample_sparse(rng, self._sparse_k(space)), dtype=np.float64)
        vmax = self.velocity_clamp * (space.high - space.low)
        v = rng.uniform(-vmax, vmax)
        return x, v

    def step(self, space: Any, p: int, t: int, x: np.ndarray, v: np.ndarray, pbest: np.ndarray,
             gbest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The move of particle p into iteration t from its stored (x, v) of t - 1."""
        return pso_step(x, v, pbest, gbest, space.low, space.high, np.random.default_rng([self.seed, p, t]),
                        inertia=self.inertia, cognitive=self.cognitive, social=self.social,
                        velocity_clamp=self.velocity_clamp)

    def _position(self, study: optuna.Study, cache: _StudyCache, rec: _Record,
                  space: Any) -> tuple[np.ndarray, np.ndarray | None, str]:
        if rec.prescreen:
            rng = np.random.default_rng([self.seed, rec.p, _PRESCREEN_STREAM])
            return np.asarray(space.sample_sparse(rng, self._sparse_k(space)), dtype=np.float64), None, "prescreen"
        p, t = rec.p, rec.t
        if t == 0:
            x, v = self.initial_state(space, p, 0)
            if not self.prescreen:
                return x, v, "start"
            ranked = self._prescreen_ranking(study, cache)
            if p < len(ranked):
                return ranked[p].x.copy(), v, f"start at prescreen trial #{ranked[p].number} (rank {p + 1})"
            return x, v, f"start: fresh sparse draw (only {len(ranked)} prescreen trials have a finite value)"
        prev_number = cache.swarm_numbers[rec.s - self.n_particles]
        prev = self._wait_for_position(study, cache, cache.records[prev_number])
        pbest, gbest = cache.pbest.get(p), cache.gbest
        if prev is not None:
            x, v = prev
            x, v = self.step(space, p, t, x, v, x if pbest is None else pbest.x, x if gbest is None else gbest.x)
            return x, v, "move"
        x, v = self.initial_state(space, p, t)
        why = f"trial #{prev_number} (iteration {t - 1}) has no stored position after {self.wait_s:g} s"
        if pbest is not None:
            return pbest.x.copy(), v, f"restart from pbest trial #{pbest.number}: {why}"
        return x, v, f"restart with a fresh sparse draw: {why}"

    def _wait_for_position(self, study: optuna.Study, cache: _StudyCache,
                           prev: _Record) -> tuple[np.ndarray, np.ndarray] | None:
        """(x, v) stored on ``prev``, waiting up to ``wait_s`` while its worker is still writing them."""
        deadline = time.monotonic() + self.wait_s
        while True:
            if prev.x is not None and prev.v is not None:
                return prev.x, prev.v
            if prev.finished:
                return None
            trial = cache.storage.get_trial(prev.trial_id)
            self._read_position(study, cache, prev, trial.system_attrs)
            if prev.x is not None and prev.v is not None:
                return prev.x, prev.v
            if trial.state.is_finished() or time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)

    def _prescreen_ranking(self, study: optuna.Study, cache: _StudyCache) -> list[_Candidate]:
        """Finished prescreen trials, best first, after waiting up to ``wait_s`` for running ones."""
        numbers = cache.swarm_numbers[:self.prescreen]
        deadline = time.monotonic() + self.wait_s
        while any(n in cache.pending for n in numbers) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            self._sync(study, cache)
        return sorted(cache.prescreened, key=lambda c: (-c.score, c.number))
