"""PSOSampler (spec 02 §3, §10 checks 2, 3, 4 and 10): sparse start statistics, the update rule against a hand
computation, PSO vs random search on shifted sphere/Rastrigin, and the swarm's bookkeeping in storage
(enqueued trials, FAIL/-inf never best, asynchronous moves, restarts, prescreen, stopping, chunked attrs)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import optuna
import pytest
from _study_pso_support import best_of, box, rastrigin, sphere
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState
from scipy import stats

from dicelab.study.pso import (
    ATTR_X,
    MAX_ATTR_CHARS,
    PSOSampler,
    is_swarm_trial,
    pso_step,
    read_floats,
    write_floats,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _attrs(study, key):
    return [t.system_attrs.get(key) for t in study.get_trials(deepcopy=False)]


def _x(trial):
    return read_floats(trial.system_attrs, "pso:x")


def _v(trial):
    return read_floats(trial.system_attrs, "pso:v")


def _max_sphere(trial):
    return -sphere(np.array([trial.suggest_float(f"x{i}", -5.12, 5.12) for i in range(5)]) - 1.0)


# -- check 2: sparse start ----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["catalog", "paper"])
def test_sparse_start_statistics(preset):
    from dicelab.study.space import SearchSpace

    space = SearchSpace.from_catalog() if preset == "catalog" else SearchSpace.paper()
    optional = np.flatnonzero(space.optional)
    always = np.flatnonzero(~space.optional)
    assert len(optional) == 15 and len(always) == 7
    sampler = PSOSampler(space, n_particles=2000, sparse_k=4, seed=0)
    xs = np.array([sampler.initial_state(space, p)[0] for p in range(2000)])
    on = np.array([[space.dims[j].value(x[j]) != space.dims[j].off for j in optional] for x in xs])
    assert (on.sum(axis=1) == 4).all()                       # exactly 4 of the 15 on, every particle
    freq = on.mean(axis=0)
    assert np.abs(freq - 4 / 15).max() <= 0.03, freq
    for j in always:                                          # always-searched: uniform over the range
        lo, hi = space.low[j], space.high[j]
        assert stats.kstest(xs[:, j], "uniform", args=(lo, hi - lo)).pvalue > 0.01, space.names[j]
    # initial velocities are uniform in +-0.2 range
    vs = np.array([sampler.initial_state(space, p)[1] for p in range(200)])
    vmax = 0.2 * (space.high - space.low)
    assert (np.abs(vs) <= vmax).all() and (np.abs(vs).max(axis=0) > 0.8 * vmax).all()


def test_study_trials_start_where_initial_state_says():
    from dicelab.study.space import SearchSpace

    space = SearchSpace.from_catalog()
    sampler = PSOSampler(space, n_particles=4, seed=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda tr: float(len(str(space.suggest(tr)))), n_trials=4)
    for trial in study.trials:
        x, v = sampler.initial_state(space, trial.number)
        assert trial.system_attrs["pso:p"] == trial.number and trial.system_attrs["pso:t"] == 0
        np.testing.assert_array_equal(_x(trial), x)
        np.testing.assert_array_equal(_v(trial), v)
        assert trial.params == space.params(x)
        assert sum(space.dims[j].value(x[j]) != space.dims[j].off for j in np.flatnonzero(space.optional)) == 4


# -- check 3: the update rule ------------------------------------------------------------------------------
def test_update_matches_hand_computation():
    """Every move of a 4-particle swarm equals the formula evaluated by hand from stored trials, to 1e-12;
    FAIL and -inf trials never serve as pbest or gbest."""
    P, seed = 4, 123
    space = box(5)
    lo, hi = np.full(5, -5.12), np.full(5, 5.12)

    def objective(trial):
        value = _max_sphere(trial)
        if trial.number in (2, 9):
            raise RuntimeError("injected fault")
        if trial.number in (1, 6, 13):
            return -math.inf
        return value

    study = optuna.create_study(direction="maximize",
                                sampler=PSOSampler(space, n_particles=P, sparse_k=None, seed=seed))
    study.optimize(objective, n_trials=24, catch=(RuntimeError,))
    trials = study.trials
    assert [t.state for t in trials].count(TrialState.FAIL) == 2
    w, c1, c2 = 0.7298, 1.49618, 1.49618
    checked = 0
    for tr in trials:
        p, t = tr.system_attrs["pso:p"], tr.system_attrs["pso:t"]
        assert (p, t) == (tr.number % P, tr.number // P)
        if t == 0:
            continue
        prev = trials[tr.number - P]
        done = [u for u in trials[:tr.number] if u.state == TrialState.COMPLETE and math.isfinite(u.value)]
        mine = [u for u in done if u.system_attrs["pso:p"] == p]
        x, v = _x(prev), _v(prev)
        pb = _x(max(mine, key=lambda u: u.value)) if mine else x
        gb = _x(max(done, key=lambda u: u.value))
        rng = np.random.default_rng([seed, p, t])
        r1, r2 = rng.random(5), rng.random(5)
        for j in range(5):
            vj = w * v[j] + c1 * r1[j] * (pb[j] - x[j]) + c2 * r2[j] * (gb[j] - x[j])
            vj = min(max(vj, -0.2 * 10.24), 0.2 * 10.24)
            xj = min(max(x[j] + vj, lo[j]), hi[j])
            assert abs(_v(tr)[j] - vj) <= 1e-12 and abs(_x(tr)[j] - xj) <= 1e-12
        assert tr.system_attrs["pso:note"] == "move"
        checked += 1
    assert checked == 20
    gbest = PSOSampler(space, n_particles=P, sparse_k=None, seed=seed).swarm(study).gbest
    finite = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    assert gbest.number == max(finite, key=lambda t: t.value).number and math.isfinite(gbest.value)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), dim=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_step_stays_in_bounds(data, dim, seed):
    floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    lo = np.array(data.draw(st.lists(floats, min_size=dim, max_size=dim)))
    width = np.array(data.draw(st.lists(st.floats(1e-3, 1e3), min_size=dim, max_size=dim)))
    hi = lo + width

    def point():
        return lo + width * np.array(data.draw(st.lists(st.floats(0, 1), min_size=dim, max_size=dim)))

    x, pbest, gbest = point(), point(), point()
    v = width * np.array(data.draw(st.lists(st.floats(-0.2, 0.2), min_size=dim, max_size=dim)))
    for _ in range(3):      # a few consecutive steps from the same particle
        x, v = pso_step(x, v, pbest, gbest, lo, hi, np.random.default_rng(seed))
        assert (np.abs(v) <= 0.2 * (hi - lo)).all()
        assert ((lo <= x) & (x <= hi)).all()


# -- check 4: PSO beats random search ------------------------------------------------------------------------
@pytest.mark.parametrize("fn, bound", [(sphere, 0.10), (rastrigin, 0.80)])
def test_pso_beats_random_search(fn, bound):
    pso = [best_of(fn, PSOSampler(box(5), n_particles=10, sparse_k=None, seed=s), 200) for s in range(10)]
    rnd = [best_of(fn, optuna.samplers.RandomSampler(seed=s), 200) for s in range(10)]
    ratio = np.median(pso) / np.median(rnd)
    wins = sum(a < b for a, b in zip(pso, rnd, strict=True))
    assert ratio <= bound, (ratio, pso, rnd)
    assert wins >= 7, (wins, pso, rnd)


# -- check 10 (sampler part): test accuracy never steers the swarm ---------------------------------------
def test_test_accuracy_does_not_steer_the_swarm():
    def run(noise_seed):
        rng = np.random.default_rng(noise_seed)

        def objective(trial):
            value = _max_sphere(trial)
            trial.set_user_attr("test_accuracy", float(rng.random()))
            return value

        study = optuna.create_study(direction="maximize",
                                    sampler=PSOSampler(box(5), n_particles=5, sparse_k=None, seed=3))
        study.optimize(objective, n_trials=30)
        return study

    a, b = run(1), run(2)
    assert [t.user_attrs["test_accuracy"] for t in a.trials] != [t.user_attrs["test_accuracy"] for t in b.trials]
    for ta, tb in zip(a.trials, b.trials, strict=True):
        assert ta.value == tb.value and ta.params == tb.params
        assert _x(ta).tolist() == _x(tb).tolist() and _v(ta).tolist() == _v(tb).tolist()
    assert a.best_trial.number == b.best_trial.number


# -- bookkeeping in storage --------------------------------------------------------------------------------
def test_multi_objective_study_is_refused():
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=PSOSampler(box(2), sparse_k=None, seed=0))
    with pytest.raises(ValueError, match="PSOSampler"):
        study.ask()
    assert [t.state for t in study.trials] == [TrialState.FAIL]      # no trial left RUNNING


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_fail_and_infinite_trials_never_become_best(direction):
    bad = -math.inf if direction == "maximize" else math.inf
    sampler = PSOSampler(box(2), n_particles=3, sparse_k=None, seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    for number in range(9):
        trial = study.ask()
        trial.suggest_float("x0", -5.12, 5.12)
        trial.suggest_float("x1", -5.12, 5.12)
        if number % 3 == 0:
            study.tell(trial, state=TrialState.FAIL)
        elif number % 3 == 1:
            study.tell(trial, bad)
        else:
            study.tell(trial, float(number))
    # a minimising study's -inf would be "best" by value: it must not become best either
    if direction == "minimize":
        study.tell(study.ask(), -math.inf)                  # trial 9, particle 0
    swarm = sampler.swarm(study)
    best = 8 if direction == "maximize" else 2
    assert swarm.gbest.number == best
    assert [None if b is None else b.number for b in swarm.pbest] == [None, None, best]


def test_enqueued_trials_seed_gbest_and_keep_swarm_indices_contiguous():
    space = box(2)
    sampler = PSOSampler(space, n_particles=2, sparse_k=None, seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        x = np.array([trial.suggest_float("x0", -5.12, 5.12), trial.suggest_float("x1", -5.12, 5.12)])
        return -float(np.sum((x - 4.0) ** 2))

    study.enqueue_trial({"x0": 4.0, "x1": 4.0})              # the optimum, known beforehand
    study.optimize(objective, n_trials=3)
    study.enqueue_trial({"x0": 0.0, "x1": 0.0})
    study.optimize(objective, n_trials=4)
    trials = study.trials
    swarm_trials = [t for t in trials if "fixed_params" not in t.system_attrs]
    assert [t.number for t in trials if not is_swarm_trial(t)] == [0, 3]
    assert all("pso:p" not in t.system_attrs for t in trials if not is_swarm_trial(t))
    assert [(t.system_attrs["pso:p"], t.system_attrs["pso:t"]) for t in swarm_trials] == [
        (0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    gbest = sampler.swarm(study).gbest
    assert gbest.number == 0 and gbest.x.tolist() == [4.0, 4.0] and gbest.value == 0.0
    # every move after the enqueued optimum is pulled towards it: the stored v says so
    first_move = trials[4]
    assert first_move.system_attrs["pso:note"] == "move"


def test_asynchronous_move_from_a_running_trial():
    """(p, t-1) still running but with a stored position: (p, t) moves on at once."""
    space = box(3)
    sampler = PSOSampler(space, n_particles=1, sparse_k=None, seed=2, wait_s=30)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    first = study.ask(space)                                  # never told: its worker is still training
    second = study.ask(space)
    x0, v0 = _x(study.trials[0]), _v(study.trials[0])
    # no finished trial: no pbest, no gbest, so the move is pure inertia
    v = np.clip(0.7298 * v0, -0.2 * 10.24, 0.2 * 10.24)
    np.testing.assert_allclose(_v(study.trials[1]), v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_x(study.trials[1]), np.clip(x0 + v, -5.12, 5.12), rtol=0, atol=1e-12)
    assert first.number == 0 and second.number == 1


def test_particle_restarts_when_previous_trial_never_got_a_position():
    space = box(2)
    sampler = PSOSampler(space, n_particles=2, sparse_k=None, seed=4, wait_s=0.2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    t0 = study.ask(space)                                    # (0, 0)
    study.tell(t0, 1.0)
    # (1, 0): a worker died between creating the trial and sampling it (no before_trial ran)
    study._storage.create_new_trial(study._study_id)
    study.tell(study.ask(space), 2.0)                        # (0, 1)
    t3 = study.ask(space)                                    # (1, 1): waits 0.2 s, then restarts
    rec = study.trials[3].system_attrs
    assert (rec["pso:p"], rec["pso:t"]) == (1, 1)
    assert rec["pso:note"].startswith("restart with a fresh sparse draw") and "#1" in rec["pso:note"]
    x, v = sampler.initial_state(sampler.space(study), 1, 1)
    np.testing.assert_array_equal(_x(study.trials[3]), x)
    np.testing.assert_array_equal(_v(study.trials[3]), v)
    study.tell(t3, 3.0)
    # the dead trial is later failed as stale; particle 1 now has a pbest (trial 3), and (1, 2) moves normally
    study._storage.set_trial_state_values(study.trials[1]._trial_id, TrialState.FAIL)
    study.tell(study.ask(space), 0.0)                        # (0, 2)
    study.ask(space)                                         # (1, 2) from trial 3
    assert study.trials[5].system_attrs["pso:note"] == "move"


def test_restart_from_pbest_when_previous_trial_failed_without_position():
    space = box(2)
    sampler = PSOSampler(space, n_particles=1, sparse_k=None, seed=4, wait_s=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.tell(study.ask(space), 5.0)                        # (0, 0): pbest
    tid = study._storage.create_new_trial(study._study_id)   # (0, 1): died before sampling, failed as stale
    time.sleep(0.002)                                        # (a stale trial ends long after it started)
    study._storage.set_trial_state_values(tid, TrialState.FAIL)
    study.ask(space)                                         # (0, 2): no wait, the trial is finished
    attrs = study.trials[2].system_attrs
    assert (attrs["pso:p"], attrs["pso:t"]) == (0, 2)
    assert attrs["pso:note"].startswith("restart from pbest trial #0")
    assert _x(study.trials[2]).tolist() == _x(study.trials[0]).tolist()
    assert attrs["pso:repeat_of"] == 0                       # same position: a re-evaluation


def test_prescreen_then_particles_start_at_the_best():
    space = box(2)
    sampler = PSOSampler(space, n_particles=3, sparse_k=None, prescreen=6, seed=7)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        value = -float(np.sum(np.array([trial.suggest_float(f"x{i}", -5.12, 5.12) for i in range(2)]) ** 2))
        # a screen's score is on another scale (fewer epochs): here far above any full-fidelity value
        screen = trial.storage.get_trial_system_attrs(trial._trial_id).get("pso:prescreen")
        return value + 100.0 if screen else value

    study.optimize(objective, n_trials=12)
    trials = study.trials
    screens = trials[:6]
    assert all(t.system_attrs.get("pso:prescreen") is True and t.system_attrs["pso:t"] == -1 for t in screens)
    assert all("pso:prescreen" not in t.system_attrs for t in trials[6:])
    ranked = sorted(screens, key=lambda t: -t.value)[:3]
    for p, (start, screen) in enumerate(zip(trials[6:9], ranked, strict=True)):
        assert (start.system_attrs["pso:p"], start.system_attrs["pso:t"]) == (p, 0)
        assert _x(start).tolist() == _x(screen).tolist()
        assert start.system_attrs["pso:repeat_of"] == screen.number
    assert [(t.system_attrs["pso:p"], t.system_attrs["pso:t"]) for t in trials[9:]] == [(0, 1), (1, 1), (2, 1)]
    # the low-fidelity screens never become gbest
    assert sampler.swarm(study).gbest.number >= 6


def test_should_stop_on_max_iterations_and_patience():
    space = box(2)
    capped = PSOSampler(space, n_particles=3, sparse_k=None, max_iterations=2, seed=0)
    study = optuna.create_study(sampler=capped)
    stops = []
    for _ in range(7):
        stops.append(capped.should_stop(study))
        study.tell(study.ask(space), 1.0)
    assert stops == [False] * 6 + [True]

    patient = PSOSampler(space, n_particles=3, sparse_k=None, patience=2, seed=0)
    study = optuna.create_study(direction="maximize", sampler=patient)
    stops = []
    for number in range(12):
        stops.append(patient.should_stop(study))
        study.tell(study.ask(space), 1.0 if number < 3 else 0.5)   # no improvement after iteration 0
    stops.append(patient.should_stop(study))
    # iteration 0 improves; iterations 1 and 2 do not -> stop once iteration 2 has finished (after 9 trials)
    assert stops == [False] * 9 + [True] * 4
    state = patient.swarm(study)
    assert state.iterations_done == 4 and state.stall == 3 and state.gbest.number == 0


def test_long_positions_are_chunked_and_exact():
    space = box(150)
    sampler = PSOSampler(space, n_particles=2, sparse_k=None, seed=9)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(5):
        trial = study.ask(space)
        study.tell(trial, -float(np.sum(np.array(list(trial.params.values())) ** 2)))
    for trial in study.trials:
        attrs = trial.system_attrs
        assert ATTR_X not in attrs and "pso:x:0" in attrs and "pso:v:0" in attrs
        assert all(len(json.dumps(v)) <= MAX_ATTR_CHARS for v in attrs.values())
        assert list(trial.params.values()) == _x(trial).tolist()
    assert sampler.swarm(study).particles[0].t == 2


def test_read_floats_sees_a_partly_written_list_as_absent():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    tid = storage.create_new_trial(study._study_id)
    values = [i / 7 for i in range(400)]
    write_floats(storage, tid, "k", values)
    attrs = storage.get_trial_system_attrs(tid)
    assert read_floats(attrs, "k").tolist() == values
    partial = {k: v for k, v in attrs.items() if k != f"k:{max(int(k.split(':')[1]) for k in attrs)}"}
    assert read_floats(partial, "k") is None


def test_space_from_study_user_attr_and_bad_arguments():
    from dicelab.errors import ConfigError
    from dicelab.study.space import SearchSpace

    space = SearchSpace.from_catalog(["dropout", "lr", "optimizer"], always=["lr", "optimizer"])
    study = optuna.create_study(direction="maximize", sampler=PSOSampler(n_particles=2, seed=0))
    study.set_user_attr("dicelab:space", space.to_json())
    study.optimize(lambda tr: float(space.suggest(tr).model_dump_json().__len__()), n_trials=3)
    assert study.trials[2].system_attrs["pso:t"] == 1
    assert set(study.trials[0].params) == set(space.names)
    for kwargs, field in [({"n_particles": 0}, "n_particles"), ({"velocity_clamp": 0.0}, "velocity_clamp"),
                          ({"prescreen": 3, "n_particles": 5}, "prescreen"), ({"seed": -1}, "seed"),
                          ({"patience": 0}, "patience")]:
        with pytest.raises(ConfigError, match=field):
            PSOSampler(box(2), sparse_k=None, **kwargs)
    with pytest.raises(ConfigError, match="sparse_k=None"):
        PSOSampler(box(2))
    with pytest.raises(ConfigError, match="dicelab:space"):
        optuna.create_study(sampler=PSOSampler(seed=0)).ask()
