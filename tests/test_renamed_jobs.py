"""Jobs queued by the release before the move to feature packages still run (for one release)."""

from datetime import timedelta

from rq.job import Job

from webapp import clock, keys
from webapp.core.queues import get_queue, rq_connection
from webapp.extensions import get_redis
from worker.renamed_jobs import RENAMED, rename_waiting_jobs


def test_a_job_queued_under_its_old_path_runs_on_the_next_worker(app, runner):
    with app.app_context():
        r = get_redis()
        r.hset(keys.SYMBOLS, "BTCUSDT", 1)
        now = clock.now_ms()
        r.hset(keys.price("BTCUSDT"), mapping={"price": "65000.5", "ts": now})
        old = get_queue("low").enqueue("webapp.price_history.sample")  # as 0.1 queued it
    result = runner.invoke(args=["worker", "low", "--burst"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        job = Job.fetch(old.id, connection=rq_connection())
        assert job.func_name == "webapp.market.price_history.sample"
        assert job.get_status() == "finished" and job.return_value() == 1
        assert get_redis().zrange(keys.price_history("BTCUSDT"), 0, -1) == [f"{now}:65000.5"]


def test_jobs_waiting_for_a_retry_are_renamed_and_others_left_alone(app):
    with app.app_context():
        conn = rq_connection()
        waiting = get_queue("default").enqueue_in(timedelta(hours=1), "webapp.symbols.refresh_due")
        current = get_queue("default").enqueue("webapp.market.symbols.refresh_due")
        assert rename_waiting_jobs(conn) == 1
        assert Job.fetch(waiting.id, connection=conn).func_name == RENAMED[
            "webapp.symbols.refresh_due"]
        assert Job.fetch(current.id, connection=conn).func_name == (
            "webapp.market.symbols.refresh_due")
        assert rename_waiting_jobs(conn) == 0  # nothing left to do the second time


def test_every_new_path_resolves_to_a_function():
    from rq.utils import import_attribute

    for new in RENAMED.values():
        assert callable(import_attribute(new)), new
