import pytest

from dicelab.config import load_run_config
from dicelab.errors import ConfigError
from dicelab.memorization import DEFAULT_LAM_GRID, MemorizationConfig


def test_defaults_follow_the_spec_and_n_is_an_alias():
    c = MemorizationConfig()
    assert (c.num_labels, c.mode, c.per_class, c.num_sets, c.head, c.pool, c.reg, c.lam, c.clean_every, c.heldout) == (
        100, "uniform", False, 1, "linear", "auto", "complement", 0.0, 1, True)
    assert c.taps == ["penultimate"] and DEFAULT_LAM_GRID == (0.0, 0.03, 0.1, 0.3, 1.0)
    cfg = load_run_config(data={"memorization": {"n": 10, "taps": ["act1", "output:act2"], "lam": {"act2": 0.5}}})
    m = cfg.memorization
    assert m.num_labels == 10 and m.lam_for("act2") == 0.5 and m.lam_for("output:act1") == 0.0
    assert load_run_config(data={}).memorization is None


@pytest.mark.parametrize("table, message", [
    ({"n": 1}, "memorization.n: Input should be greater than or equal to 2"),
    ({"num_labels": 5, "n": 5}, "num_labels: given twice"),
    ({"taps": []}, "memorization.taps: name at least one module"),
    ({"taps": ["a", "output:a"]}, "memorization.taps: 'output:a' is listed twice"),
    ({"taps": ["side:a"]}, "memorization.taps: 'side:a' is not NAME"),
    ({"lam": -0.1}, "memorization.lam"),
    ({"taps": ["a"], "lam": {"b": 0.1}}, "lam: key 'b' is not one of taps"),
    ({"reg": "flip"}, "memorization.reg"),
    ({"lambda": 0.1}, "memorization.lambda: Extra inputs are not permitted"),
])
def test_bad_tables_name_the_field(table, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(data={"memorization": table})
    assert message in str(err.value)
