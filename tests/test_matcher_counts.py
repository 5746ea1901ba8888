"""/metrics counts every alert a tick fired, even when a Redis error cuts the tick short:
its retry returns only what had not fired yet."""

import pytest
from prometheus_client import REGISTRY

from tests.test_matcher import T0, arm
from webapp import keys
from webapp.exceptions import TicksNotMatched
from worker.matcher import INLINE, Matcher


def counted():
    return REGISTRY.get_sample_value("tickerbell_alerts_fired_total",
                                     {"type": "PRICE_ALERT"}) or 0.0


def test_a_round_counts_what_it_fired_though_a_storm_s_next_batch_fails(r):
    """Two symbols matched in one round; the first one's storm goes on alone, and its next
    batch fails: the first batch and the other symbol's alert had fired in the round."""
    for target in (10, 11, 12):
        arm(r, "ETHUSDT", target=target, user_id=1)
    arm(r, "ETHUSDT", target=13, user_id=2)  # in the storm's second batch
    arm(r, "BTCUSDT", target=10, user_id=3)
    r.set(keys.replay(2), "not a stream")  # that user's write fails, with Redis's own error
    before = counted()
    with pytest.raises(TicksNotMatched):
        Matcher(r, batch=3, mode=INLINE).on_ticks([("price", "ETHUSDT", 20, T0, 1),
                                                    ("price", "BTCUSDT", 20, T0, 1)])
    assert counted() - before == 4
