"""The pure ownership rules: which process should deliver to which webhook, and
whether a lease leaves time for a request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from almhookd.domain.ownership import LeasePolicy, leader_of, owner_of, share_of

WEBHOOKS = [f"wh_{n:04x}" for n in range(200)]
ids = st.text(alphabet="abcdef0123456789", min_size=1, max_size=8)


@given(live=st.sets(ids, min_size=1, max_size=6))
def test_every_webhook_has_exactly_one_owner_and_the_shares_partition_them(
    live: set[str],
) -> None:
    shares = [share_of(process, WEBHOOKS, live) for process in live]
    assert sum(len(share) for share in shares) == len(WEBHOOKS)
    assert set().union(*shares) == set(WEBHOOKS)
    for webhook in WEBHOOKS:
        assert owner_of(webhook, live) in live


@given(live=st.sets(ids, min_size=2, max_size=6), data=st.data())
def test_a_process_leaving_moves_only_its_own_webhooks(live: set[str], data: st.DataObject) -> None:
    leaving = data.draw(st.sampled_from(sorted(live)))
    after = live - {leaving}
    for webhook in WEBHOOKS:
        before = owner_of(webhook, live)
        if before != leaving:
            assert owner_of(webhook, after) == before


def test_the_webhooks_spread_over_the_processes() -> None:
    live = {"p1", "p2", "p3"}
    sizes = sorted(len(share_of(p, WEBHOOKS, live)) for p in live)
    assert sizes[0] >= 40 and sizes[-1] <= 100, sizes  # 200 webhooks: about 67 each


def test_every_process_computes_the_same_owner_whatever_the_order() -> None:
    assert all(owner_of(w, ["p1", "p2", "p3"]) == owner_of(w, ("p3", "p1", "p2")) for w in WEBHOOKS)
    assert owner_of("wh_1", []) is None
    assert share_of("alone", WEBHOOKS[:5], []) == set(WEBHOOKS[:5])


@pytest.mark.parametrize(
    ("expires_at_ms", "now_ms", "may"),
    [
        (100_000, 100_000 - 3_001, True),  # just more than the margin left
        (100_000, 100_000 - 3_000, False),  # exactly the margin: stop
        (100_000, 50_000, True),
        (100_000, 100_000, False),  # expired
        (100_000, 120_000, False),
    ],
)
def test_sending_stops_a_margin_before_the_lease_ends(
    expires_at_ms: int, now_ms: int, may: bool
) -> None:
    policy = LeasePolicy.for_takeover(15)
    assert policy.margin_ms == 3_000
    assert policy.may_send(expires_at_ms=expires_at_ms, now_ms=now_ms) is may


@pytest.mark.parametrize(
    ("takeover", "lease_ms", "renew_ms", "margin_ms"),
    [
        (15, 12_000, 2_000, 3_000),  # the default
        (3, 2_400, 400, 600),
        (60, 48_000, 8_000, 12_000),
    ],
)
def test_a_dead_process_is_taken_over_within_the_takeover_time(
    takeover: float, lease_ms: int, renew_ms: int, margin_ms: int
) -> None:
    policy = LeasePolicy.for_takeover(takeover)
    assert (policy.lease_ms, policy.renew_ms, policy.margin_ms) == (lease_ms, renew_ms, margin_ms)
    # The lease runs out, then another process takes it at its next renewal.
    assert policy.lease_ms + policy.renew_ms <= takeover * 1000
    assert policy.dead_after_ms == policy.lease_ms
    # Two renewals may be missed before sending stops.
    assert policy.lease_ms > 2 * policy.renew_ms + policy.margin_ms


@pytest.mark.parametrize(
    ("lease_ms", "renew_ms", "margin_ms"),
    [(10_000, 0, 1_000), (10_000, 10_000, 1_000), (10_000, 2_000, 6_000), (10_000, 2_000, 0)],
)
def test_an_impossible_policy_is_refused(lease_ms: int, renew_ms: int, margin_ms: int) -> None:
    with pytest.raises(ValueError, match="must"):
        LeasePolicy(lease_ms=lease_ms, renew_ms=renew_ms, margin_ms=margin_ms)


def test_one_leader_among_the_live_processes() -> None:
    live = {"p1", "p2", "p3"}
    leader = leader_of(live)
    assert leader in live
    assert leader_of(sorted(live, reverse=True)) == leader
    assert leader_of(live - {leader}) != leader
    assert leader_of([]) is None
