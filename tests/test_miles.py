"""MILES: Algorithm 1 branch by branch, Eq. 4-5 properties, and the scheduler."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miles_tune.balance import MilesScheduler, conditional_utilization, create_method, imbalance
from miles_tune.balance.miles import miles_multipliers


def algorithm1(
    u_a: float, u_b: float, tau: float, mu: float, prev: tuple[float, float]
) -> tuple[float, float]:
    """Algorithm 1 of the paper, transcribed literally (multipliers of α_AB)."""
    a, b = prev
    delta = abs(u_a - u_b)
    if delta <= tau or (u_a < 0 and u_b < 0):
        a, b = 1.0, 1.0
    elif u_a > 0 and u_b < 0:
        a = mu
    elif u_a < 0 and u_b > 0 or u_a < u_b:
        b = mu
    else:
        a = mu
    return a, b


U_VALUES = [-0.8, -0.3, -0.1, 0.0, 0.1, 0.3, 0.5, 1.0]
TAUS = [0.0, 0.1, 0.2, 0.4]
MUS = [0.5, 1.0, 0.01]


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("mu", MUS)
def test_literal_variant_matches_algorithm1_on_every_branch(tau: float, mu: float) -> None:
    for (u_a, u_b), prev in itertools.product(
        itertools.product(U_VALUES, U_VALUES), [(1.0, 1.0), (mu, 1.0), (1.0, mu)]
    ):
        got = miles_multipliers({"a": u_a, "b": u_b}, tau, mu, {"a": prev[0], "b": prev[1]}, "literal")
        assert (got["a"], got["b"]) == algorithm1(u_a, u_b, tau, mu, prev), (u_a, u_b, prev)


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("mu", MUS)
def test_reset_variant_matches_algorithm1_from_a_fresh_state(tau: float, mu: float) -> None:
    """From (1, 1), Algorithm 1 changes at most one rate, so both readings agree."""
    for u_a, u_b in itertools.product(U_VALUES, U_VALUES):
        got = miles_multipliers({"a": u_a, "b": u_b}, tau, mu, {"a": 1.0, "b": 1.0}, "reset")
        assert (got["a"], got["b"]) == algorithm1(u_a, u_b, tau, mu, (1.0, 1.0))


def test_named_branches() -> None:
    mu = 0.5
    # δ = τ exactly: no action (≤)
    assert miles_multipliers({"a": 0.3, "b": 0.1}, 0.2, mu) == {"a": 1.0, "b": 1.0}
    # both negative: wait, however large δ
    assert miles_multipliers({"a": -0.1, "b": -0.9}, 0.0, mu) == {"a": 1.0, "b": 1.0}
    # A over-used with the other negative
    assert miles_multipliers({"a": 0.4, "b": -0.2}, 0.1, mu) == {"a": mu, "b": 1.0}
    assert miles_multipliers({"a": -0.2, "b": 0.4}, 0.1, mu) == {"a": 1.0, "b": mu}
    # u exactly zero falls through to the comparison
    assert miles_multipliers({"a": 0.0, "b": -0.5}, 0.1, mu) == {"a": mu, "b": 1.0}
    assert miles_multipliers({"a": -0.5, "b": 0.0}, 0.1, mu) == {"a": 1.0, "b": mu}
    assert miles_multipliers({"a": 0.0, "b": 0.5}, 0.1, mu) == {"a": 1.0, "b": mu}
    # ties: δ = 0 ≤ τ
    assert miles_multipliers({"a": 0.3, "b": 0.3}, 0.0, mu) == {"a": 1.0, "b": 1.0}
    # μ = 1 is a no-op whatever u
    assert miles_multipliers({"a": 0.9, "b": -0.9}, 0.0, 1.0) == {"a": 1.0, "b": 1.0}


def test_variants_differ_when_dominance_switches() -> None:
    prev = {"a": 0.5, "b": 1.0}  # A was slowed last epoch; now B dominates
    u = {"a": 0.0, "b": 0.5}
    assert miles_multipliers(u, 0.1, 0.5, prev, "literal") == {"a": 0.5, "b": 0.5}
    assert miles_multipliers(u, 0.1, 0.5, prev, "reset") == {"a": 1.0, "b": 0.5}
    # a "no action" epoch resets both in both readings
    assert miles_multipliers({"a": 0.1, "b": 0.1}, 0.1, 0.5, {"a": 0.5, "b": 0.5}, "literal") == {
        "a": 1.0,
        "b": 1.0,
    }


def test_three_modalities() -> None:
    u = {"a": 0.1, "b": 0.6, "c": -0.2}
    assert miles_multipliers(u, 0.2, 0.25) == {"a": 1.0, "b": 0.25, "c": 1.0}
    assert imbalance(u) == pytest.approx(0.8)
    # tie for the largest u: the first modality in order is slowed (Algorithm 1's else favours A)
    assert miles_multipliers({"a": 0.5, "b": 0.5, "c": 0.0}, 0.2, 0.5) == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert miles_multipliers({"c": 0.5, "b": 0.5, "a": 0.0}, 0.2, 0.5) == {"c": 0.5, "b": 1.0, "a": 1.0}
    # literal keeps an earlier reduction of another modality
    prev = {"a": 0.5, "b": 1.0, "c": 1.0}
    assert miles_multipliers(u, 0.2, 0.5, prev, "literal") == {"a": 0.5, "b": 0.5, "c": 1.0}
    # all negative: no action
    assert miles_multipliers({"a": -0.1, "b": -0.5, "c": -0.9}, 0.0, 0.5) == {"a": 1.0, "b": 1.0, "c": 1.0}


@pytest.mark.parametrize(
    "tau,mu", [(-0.1, 0.5), (0.2, 0.0), (0.2, -0.5), (0.2, 1.5), (math.nan, 0.5), (0.2, math.inf)]
)
def test_bad_tau_mu_refused(tau: float, mu: float) -> None:
    with pytest.raises(ValueError, match="tau|mu"):
        miles_multipliers({"a": 0.1, "b": 0.2}, tau, mu)
    with pytest.raises(ValueError, match="tau|mu"):
        create_method("miles", tau=tau, mu=mu)


def test_bad_variant_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        create_method("miles", variant="strict")


# -- Eq. 4 and 5 -------------------------------------------------------------------------------
def test_conditional_utilization_two_modalities() -> None:
    # M_mm = 0.8, head A alone 0.6, head B alone 0.4: without A = B's head, without B = A's head
    u = conditional_utilization(0.8, {"a": 0.4, "b": 0.6})
    assert u == pytest.approx({"a": 0.5, "b": 0.25})
    assert imbalance(u) == pytest.approx(0.25)
    assert conditional_utilization(0.0, {"a": 0.3, "b": 0.1}) == {"a": 0.0, "b": 0.0}


metric = st.floats(0, 1, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(mm=st.floats(1e-3, 1), wa=metric, wb=metric, wc=metric)
def test_utilization_properties(mm: float, wa: float, wb: float, wc: float) -> None:
    u = conditional_utilization(mm, {"a": wa, "b": wb, "c": wc})
    assert all(v <= 1 + 1e-12 for v in u.values())  # a modality cannot contribute more than everything
    d = imbalance(u)
    assert d >= 0
    assert d == pytest.approx(max(u.values()) - min(u.values()))
    two = conditional_utilization(mm, {"a": wa, "b": wb})
    assert imbalance(two) == pytest.approx(abs(two["a"] - two["b"]))
    # u is scale-free: the same ratios give the same u
    scaled = conditional_utilization(mm / 2, {"a": wa / 2, "b": wb / 2, "c": wc / 2})
    assert scaled == pytest.approx(u)
    # a better "without" metric never means more utilisation
    if wa <= wb:
        assert u["a"] >= u["b"]


@settings(max_examples=200, deadline=None)
@given(
    u=st.dictionaries(st.sampled_from("abcd"), st.floats(-2, 1, allow_nan=False), min_size=2, max_size=4),
    tau=st.floats(0, 1),
    mu=st.floats(0.001, 1),
)
def test_multiplier_properties(u: dict[str, float], tau: float, mu: float) -> None:
    out = miles_multipliers(u, tau, mu)
    assert set(out) == set(u)
    slowed = [m for m, v in out.items() if v != 1.0]
    assert len(slowed) <= 1 or mu == 1.0
    if slowed:
        assert u[slowed[0]] == max(u.values())
        assert imbalance(u) > tau


# -- the scheduler -----------------------------------------------------------------------------
def make_optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    groups = [
        {"name": "a", "modality": "a", "params": [torch.nn.Parameter(torch.zeros(2))]},
        {"name": "b", "modality": "b", "params": [torch.nn.Parameter(torch.zeros(2))]},
        {"name": "fusion", "params": [torch.nn.Parameter(torch.zeros(2))]},
    ]
    return torch.optim.Adam(groups, lr=lr)


def test_scheduler_sets_rates_without_compounding() -> None:
    opt = make_optimizer(0.01)
    sched = MilesScheduler(opt, tau=0.1, mu=0.5)
    for _ in range(3):  # A dominates three epochs running: still μ·α, never μ³·α
        sched.step(0.8, {"a": 0.2, "b": 0.7})
        assert sched.get_last_lr() == pytest.approx([0.005, 0.01, 0.01])
    assert sched.last_u == pytest.approx({"a": 0.75, "b": 0.125})
    assert sched.last_delta == pytest.approx(0.625)
    sched.step(0.8, {"a": 0.7, "b": 0.2})  # B dominates: reset reading restores A
    assert sched.get_last_lr() == pytest.approx([0.01, 0.005, 0.01])
    sched.step(0.8, {"a": 0.75, "b": 0.75})  # balanced: no action
    assert sched.get_last_lr() == pytest.approx([0.01, 0.01, 0.01])


def test_scheduler_state_round_trip() -> None:
    opt = make_optimizer()
    sched = MilesScheduler(opt, tau=0.05, mu=0.25, variant="literal")
    sched.step(0.8, {"a": 0.2, "b": 0.7})
    sched.step(0.8, {"a": 0.7, "b": 0.5})
    state = sched.state_dict()
    opt2 = make_optimizer()
    sched2 = MilesScheduler(opt2, tau=0.2, mu=0.5)
    sched2.load_state_dict(state)
    assert sched2.state_dict() == state
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert (sched2.tau, sched2.mu, sched2.variant) == (0.05, 0.25, "literal")
    sched.step(0.8, {"a": 0.3, "b": 0.3})
    sched2.step(0.8, {"a": 0.3, "b": 0.3})
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_scheduler_needs_tagged_groups_and_matching_metrics() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="modality"):
        MilesScheduler(opt, 0.2, 0.5)
    sched = MilesScheduler(make_optimizer(), 0.2, 0.5)
    with pytest.raises(ValueError, match="param groups"):
        sched.step(0.8, {"a": 0.1, "c": 0.2})
