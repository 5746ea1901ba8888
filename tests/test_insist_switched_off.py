"""Taking a type off the types that insist stops the reminders already running for it, at
their next round: "stop nagging me about these" means these too, not only the next ones."""

import pytest

from tests.hub import run_jobs
from tests.test_insist import (
    breach,
    escalation,
    make_world,
    rounds,
    run_at,
    set_pref,
)

pytestmark = pytest.mark.both_databases


@pytest.fixture
def world(make_app, http_recorder):
    return make_world(make_app, http_recorder)


def test_a_type_switched_off_ends_its_running_reminders(world):
    app, uid, _ = world
    nid = breach(app, uid)  # RISK_LIMIT_BREACHED insists by default
    kept = breach(app, uid, type="SYSTEM_MAINTENANCE", title="Exchange maintenance at 02:00")
    run_jobs(app)  # the slow steps: first deliveries, reminders begun
    assert run_at(app, nid, 5) == 1 and run_at(app, kept, 5) > 0
    set_pref(app, uid, insist_types=["SYSTEM_MAINTENANCE"])
    assert run_at(app, nid, 10) == 0  # ended, nothing sent
    esc = escalation(app, nid)
    assert (esc.rounds, esc.ended, esc.next_at) == (1, "switched_off", None)
    assert run_at(app, kept, 10) > 0  # a type still insisting goes on
    assert escalation(app, kept).ended == ""
    assert [r for r in rounds(app, nid) if r[0] == 2] == []
    assert [r for r in rounds(app, kept) if r[0] == 2] != []
