"""The token bucket behind ingest's intake quota and the agent's replay rate."""

from __future__ import annotations

import pytest

from lakehouse.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_then_the_rate_and_never_more_than_the_burst():
    clock = Clock()
    bucket = TokenBucket(200, burst=100, clock=clock)
    assert bucket.allowance() == 100
    bucket.spend(100)
    assert bucket.allowance() == 0
    assert bucket.wait_s() == pytest.approx(1 / 200)
    clock.now += 0.25
    assert bucket.allowance() == 50
    clock.now += 60
    assert bucket.allowance() == 100  # a long pause buys only one burst


def test_overspending_is_waited_out():
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)  # burst: one second's worth
    assert bucket.allowance() == 10
    bucket.spend(15)
    assert bucket.wait_s() == pytest.approx(0.6)
    clock.now += 0.75
    assert bucket.allowance() == 2


def test_rate_zero_is_no_limit():
    bucket = TokenBucket(0)
    assert not bucket.limited
    assert bucket.allowance() is None
    bucket.spend(10**6)
    assert bucket.allowance() is None and bucket.wait_s() == 0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rate": -1}, "rate"), ({"rate": float("nan")}, "rate"), ({"rate": 5, "burst": 0.5}, "burst"),
])
def test_bad_settings_are_refused_with_the_field_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TokenBucket(**kwargs)
