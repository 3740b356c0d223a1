import numpy as np
import torch

from dicelab.seeding import SeedBank, derive_seed, generator, numpy_rng


def test_same_name_and_root_give_the_same_stream():
    a = torch.rand(1000, generator=generator(5, "data.order"))
    b = torch.rand(1000, generator=generator(5, "data.order"))
    assert torch.equal(a, b)


def test_different_names_or_roots_give_different_uncorrelated_streams():
    n = 100_000
    a = torch.randn(n, generator=generator(0, "randomness.dropout"), dtype=torch.float64)
    b = torch.randn(n, generator=generator(0, "randomness.loss_noise"), dtype=torch.float64)
    c = torch.randn(n, generator=generator(1, "randomness.dropout"), dtype=torch.float64)
    for other in (b, c):
        assert not torch.equal(a, other)
        corr = torch.corrcoef(torch.stack([a, other]))[0, 1].item()
        assert abs(corr) < 4 / n**0.5  # independent streams: correlation within 4 standard errors of 0


def test_seed_derivation_is_stable_across_versions():
    # A pinned value: if the derivation ever changes, every stored study stops being reproducible.
    assert derive_seed(0, "init") == 7768689498863184352
    assert 0 <= derive_seed(2**40, "x") < 2**63


def test_seed_bank_override_changes_only_that_source():
    base = SeedBank(3)
    over = SeedBank(3, {"randomness.dropout": 7})
    assert base.seed("init") == over.seed("init")
    assert base.seed("randomness.dropout") != over.seed("randomness.dropout")
    assert over.seed("randomness.dropout") == SeedBank(99, {"randomness.dropout": 7}).seed("randomness.dropout")


def test_numpy_streams_follow_the_same_rule():
    assert np.array_equal(numpy_rng(0, "search").random(5), SeedBank(0).numpy("search").random(5))
    assert not np.array_equal(numpy_rng(0, "search").random(5), numpy_rng(0, "other").random(5))


def test_generators_do_not_touch_the_global_rng():
    state = torch.get_rng_state()
    torch.rand(10, generator=generator(0, "x"))
    assert torch.equal(state, torch.get_rng_state())
