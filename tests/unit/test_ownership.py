"""The pure ownership rules: which process should deliver to which webhook, and
whether a lease leaves time for a request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from almhookd.domain.ownership import LeasePolicy, owner_of, share_of

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
        (100_000, 100_000 - 17_000, True),  # exactly the budget left
        (100_000, 100_000 - 16_999, False),  # a millisecond short
        (100_000, 50_000, True),
        (100_000, 100_000, False),  # expired
        (100_000, 120_000, False),
    ],
)
def test_a_request_starts_only_while_the_lease_outlives_it(
    expires_at_ms: int, now_ms: int, may: bool
) -> None:
    policy = LeasePolicy.for_timeouts(connect_timeout_s=10, read_timeout_s=5)
    assert policy.request_budget_ms == 17_000
    assert policy.may_send(expires_at_ms=expires_at_ms, now_ms=now_ms) is may


@pytest.mark.parametrize(
    ("connect", "read", "takeover", "lease_ms"),
    [
        (10, 5, 15, 21_000),  # the defaults: a 15 s takeover cannot hold a 15 s request
        (2, 2, 15, 15_000),
        (1, 1, 5, 8_000),
    ],
)
def test_the_lease_outlasts_the_longest_request_and_a_missed_renewal(
    connect: float, read: float, takeover: float, lease_ms: int
) -> None:
    policy = LeasePolicy.for_timeouts(
        connect_timeout_s=connect, read_timeout_s=read, takeover_s=takeover
    )
    assert policy.lease_ms == lease_ms
    assert policy.lease_ms > policy.request_budget_ms + policy.renew_ms


@pytest.mark.parametrize(
    ("lease_ms", "renew_ms", "budget_ms"),
    [(10_000, 0, 1_000), (10_000, 10_000, 1_000), (10_000, 2_000, 8_000), (10_000, 2_000, 9_000)],
)
def test_an_impossible_policy_is_refused(lease_ms: int, renew_ms: int, budget_ms: int) -> None:
    with pytest.raises(ValueError, match="must"):
        LeasePolicy(lease_ms=lease_ms, renew_ms=renew_ms, request_budget_ms=budget_ms)
