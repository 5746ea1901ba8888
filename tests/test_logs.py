"""Structured logs: LOG_FORMAT=json lines, the request id taken or made on the web side,
carried by RQ jobs and fired batches, and followed through the real processes from a tick
(and from an events POST) to the email that went out."""

import io
import json
import logging
import re

import pytest
import requests
from rq.job import Job

from devtools.fakefeed import FakeFeed
from tests.hub import make_user, run_jobs, serving_mailbox
from tests.product import SYMBOLS, Product, until
from webapp.core import logs
from webapp.core.queues import enqueue, rq_connection
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import DeliveryLog
from webapp.notify import service_tokens

PROCESSES = ("web", "worker", "listener", "scheduler")


def record_line(config, role, emit):
    """What the formatter of `config` writes for the records `emit(logger)` makes."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(config, role))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = True, logging.NOTSET
    return out.getvalue().splitlines()


def test_a_json_line_holds_the_call_s_fields_and_the_bound_request_id():
    token = logs.bind("req-7")
    try:
        [line] = record_line({"LOG_FORMAT": "json"}, "worker", lambda log: log.info(
            "sent %s", "it", extra={"notification_id": "1-2", "channel": "email"}))
    finally:
        logs.unbind(token)
    entry = json.loads(line)
    assert entry["message"] == "sent it" and entry["level"] == "INFO"
    assert entry["logger"] == "tests.logs" and entry["role"] == "worker"
    assert entry["request_id"] == "req-7"
    assert entry["notification_id"] == "1-2" and entry["channel"] == "email"
    assert entry["time"].endswith("+00:00")


def test_an_event_is_one_greppable_text_line_and_a_json_object_with_its_fields():
    def emit(log):
        logs.event(log, "delivery_attempt_failed", logging.WARNING, delivery_id=5,
                   channel="email", error="OSError: no route", in_s=1.5, process="web")

    [text] = record_line({}, "worker", emit)
    assert text.endswith(' WARNING tests.logs event=delivery_attempt_failed delivery_id=5 '
                         'channel=email error="OSError: no route" in_s=1.50 process=web')
    [line] = record_line({"LOG_FORMAT": "json"}, "worker", emit)
    entry = json.loads(line)
    assert (entry["event"], entry["delivery_id"], entry["channel"], entry["in_s"]) == (
        "delivery_attempt_failed", 5, "email", 1.5)
    assert entry["error"] == "OSError: no route" and entry["level"] == "WARNING"
    assert entry["process"] != "web"  # a LogRecord attribute's name: in the text alone
    [text] = record_line({}, "worker", lambda log: logs.event(log, "x", text="a\nforged=1"))
    assert text.endswith('event=x text="a\\nforged=1"')  # one line: no forged field


def test_an_exception_goes_into_the_exc_field_of_its_one_line():
    def fail(log):
        try:
            raise ValueError("bad tick")
        except ValueError:
            log.exception("it broke")

    [line] = record_line({"LOG_FORMAT": "json"}, "listener", fail)
    entry = json.loads(line)
    assert entry["message"] == "it broke"
    assert "Traceback" in entry["exc"] and "ValueError: bad tick" in entry["exc"]


def test_text_stays_the_familiar_line_and_a_typo_is_refused():
    [line] = record_line({}, "web", lambda log: log.warning("careful"))
    assert re.fullmatch(r"\S+ \S+ WARNING tests\.logs careful", line)
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logs.formatter({"LOG_FORMAT": "jsn"}, "web")


@pytest.mark.parametrize("sent, kept", [
    ("abc-123", True), ("trace:9.1_a", True), ("x" * 64, True),
    ("x" * 65, False), ("has space", False), ("<script>", False), ("", False)])
def test_a_sane_request_id_is_kept_and_any_other_replaced(client, sent, kept):
    answer = client.get("/auth/login", headers={"X-Request-ID": sent})
    got = answer.headers["X-Request-ID"]
    assert (got == sent) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", got)


def test_each_request_without_an_id_gets_a_new_one(client):
    first = client.get("/auth/login").headers["X-Request-ID"]
    second = client.get("/auth/login").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_a_request_refused_for_its_csrf_token_keeps_its_id(client):
    answer = client.post("/auth/login", data={"email": "a@example.com", "password": "x"},
                         headers={"X-Request-ID": "csrf-refused-1"})
    assert answer.status_code == 400 and answer.headers["X-Request-ID"] == "csrf-refused-1"


def test_jobs_carry_the_id_of_what_queued_them_down_to_each_delivery(app, client):
    uid = make_user(app, "ids@example.com")
    with app.app_context():
        _, token = service_tokens.create("ids")
    posted = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}",
                                                    "X-Request-ID": "abc-123"},
                         json={"type": "ORDER_EXECUTED", "user_id": uid, "title": "Bought"})
    assert posted.status_code == 202 and posted.headers["X-Request-ID"] == "abc-123"
    run_jobs(app)  # the route job, then the delivery jobs it queued
    with app.app_context():
        rows = db.session.scalars(db.select(DeliveryLog)).all()
        assert rows, "the event planned no delivery"
        for row in rows:
            job = Job.fetch(f"delivery-{row.id}", connection=rq_connection())
            assert job.meta[logs.META_KEY] == "abc-123"


def test_requests_drained_by_one_job_keep_their_own_ids_down_to_each_delivery(app, client):
    uid = make_user(app, "two-ids@example.com")
    with app.app_context():
        _, token = service_tokens.create("two-ids")
    for rid in ("req-a", "req-b"):  # the second finds the first's drain job waiting
        assert client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}",
                                                      "X-Request-ID": rid},
                           json={"type": "ORDER_EXECUTED", "user_id": uid,
                                 "title": rid}).status_code == 202
    run_jobs(app)
    with app.app_context():
        rows = db.session.scalars(db.select(DeliveryLog)).all()
        seen = {}
        for row in rows:
            title = inbox.get(uid, row.notification_id)["title"]
            job = Job.fetch(f"delivery-{row.id}", connection=rq_connection())
            seen.setdefault(title, set()).add(job.meta[logs.META_KEY])
        assert seen == {"req-a": {"req-a"}, "req-b": {"req-b"}}


def test_a_job_queued_outside_any_request_carries_no_id(app):
    with app.app_context():
        job = enqueue(logs.current)
        assert logs.META_KEY not in Job.fetch(job.id, connection=rq_connection()).meta


# --- the real processes, as `make run` starts them, with LOG_FORMAT=json ---------------------

@pytest.fixture(scope="module")
def mailbox():
    with serving_mailbox() as box:
        yield box


@pytest.fixture(scope="module")
def product(tmp_path_factory, mailbox):
    with FakeFeed() as feed:
        running = Product(tmp_path_factory.mktemp("jsonlogs"), feed, env={
            "LOG_FORMAT": "json", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port),
            "SMTP_TLS": "none"})
        running.start()
        yield running
        assert running.stop() == 0, running.output()


def process_lines(product):
    """(process, text) of each line the supervised processes wrote (launch.log's prefix off)."""
    found = []
    for line in (product.tmp / "launch.log").read_text(errors="replace").splitlines():
        match = re.match(r"\S+ ([\w-]+)(?:\.\d+)?\s*\| (.*)$", line)
        if match and match.group(1).split("-")[0] in PROCESSES:
            found.append((match.group(1), match.group(2)))
    return found


def entries(product):
    """The lines that parse (test_every_line_... fails on any other)."""
    found = []
    for _, text in process_lines(product):
        try:
            found.append(json.loads(text))
        except ValueError:
            continue
    return found


def with_id(product, request_id):
    return [e for e in entries(product) if e.get("request_id") == request_id]


def delivered_by_email(product, request_id):
    return [e for e in with_id(product, request_id)
            if e["message"].startswith("event=delivery_finished") and e.get("channel") == "email"
            and e.get("status") == "sent"]


def test_json_logs_followed_from_a_tick_to_an_email(product, mailbox):
    symbol = next(SYMBOLS)
    product.arm(1, symbol, 100)
    sent_before = len(mailbox.messages)
    product.feed.trade(symbol, 101)
    assert len(mailbox.wait_for(sent_before + 1, timeout=60)) > sent_before
    fired = until(lambda: [e for e in entries(product) if e.get("event") == "alerts_fired"
                           and e.get("symbol") == symbol], 30)
    assert fired, product.output()
    [line] = fired
    request_id = line["request_id"]
    assert line["process"].startswith("listener") and request_id.startswith(f"tick-{symbol}-")
    delivered = until(lambda: delivered_by_email(product, request_id), 30)
    assert delivered, with_id(product, request_id)
    assert delivered[0]["process"] == "worker" and delivered[0]["logger"].startswith("webapp")
    passed(product, request_id, "event=fired_batch_settled")  # the slow path, in between


def passed(product, request_id, step):
    """The id's way passes `step`, and RQ's own lines of the delivery job carry it too (its
    "Job OK" comes after the delivery's own line)."""
    def seen():
        lines = with_id(product, request_id)
        return (any(e["message"].startswith(step) for e in lines)
                and any(e["logger"].startswith("rq") and "Job OK" in e["message"]
                        for e in lines))

    assert until(seen, 30), with_id(product, request_id)


def test_json_logs_followed_from_an_events_post_to_an_email(product, mailbox):
    with product.app.app_context():
        _, token = service_tokens.create("json-logs")
    sent_before = len(mailbox.messages)
    posted = requests.post(product.base + "/api/v1/events", timeout=5, json={
        "type": "ORDER_EXECUTED", "user_id": product.uid, "title": "Bought 0.5 BTC"},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "abc-123"})
    assert posted.status_code == 202 and posted.headers["X-Request-ID"] == "abc-123"
    assert len(mailbox.wait_for(sent_before + 1, timeout=60)) > sent_before
    delivered = until(lambda: delivered_by_email(product, "abc-123"), 30)
    assert delivered, with_id(product, "abc-123")
    web = [e for e in with_id(product, "abc-123") if e["process"] == "web"]
    assert any("/api/v1/events" in e["message"] for e in web)  # gunicorn's access line
    passed(product, "abc-123", "event=batch_routed")


def test_every_line_each_process_writes_parses_as_json(product):
    lines = process_lines(product)
    assert {name.split("-")[0] for name, _ in lines} >= set(PROCESSES)
    loose = []
    for name, text in lines:
        try:
            entry = json.loads(text)
        except ValueError:
            loose.append(f"{name}: {text[:300]}")
            continue
        assert {"time", "level", "logger", "message", "process"} <= set(entry), text
    assert not loose, "\n".join(loose)


def failing_job():
    raise RuntimeError("relay said no")


def test_a_failed_job_s_line_carries_its_request_id_and_its_traceback_apart(app):
    """As `flask worker` runs jobs: RQ's failure line, in JSON, has the id of what queued the
    job and the traceback in `exc`, not in the message."""
    import threading

    from webapp.core.outage import Outage
    from worker.runner import JobWorker, work_forever

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter({"LOG_FORMAT": "json"}, "worker"))
    rq_log = logging.getLogger("rq.worker")
    rq_log.addHandler(handler)
    try:
        with app.app_context():
            token = logs.bind("fail-77")
            job = enqueue(failing_job)
            logs.unbind(token)
            work_forever(lambda: JobWorker(["default"], connection=rq_connection()),
                         Outage("test"), threading.Event(), burst=True)
    finally:
        rq_log.removeHandler(handler)
    failed = [entry for entry in map(json.loads, out.getvalue().splitlines())
              if "exception raised while executing" in entry["message"]]
    assert len(failed) == 1, out.getvalue()
    assert failed[0]["request_id"] == "fail-77" and failed[0]["level"] == "ERROR"
    assert failed[0]["message"].endswith(f"job {job.id}: exception raised while executing "
                                         "(tests.test_logs.failing_job)")
    assert "Traceback" in failed[0]["exc"] and "RuntimeError: relay said no" in failed[0]["exc"]


def quiet_job():
    return None


def test_a_periodic_job_s_routine_lines_are_left_out(app):
    """A periodic job keeps its record for rq-scheduler's next run (result_ttl -1): RQ's
    "clean up result key manually" is no advice to act on. The watchdog's run every 5 s, and
    the registries' cleaning every 15 s, say nothing; an hourly job's run is still said."""
    import threading

    from webapp.core.outage import Outage
    from webapp.core.queues import get_queue
    from worker.runner import JobWorker, work_forever

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    rq_log = logging.getLogger("rq.worker")
    rq_log.addHandler(handler)
    level, rq_log.level = rq_log.level, logging.INFO
    try:
        with app.app_context():
            get_queue("default").enqueue(quiet_job, result_ttl=-1, meta={"interval": 3600},
                                         job_id="hourly-job")
            # the watchdog itself, every 5 s: its routine lines would be most of the log
            get_queue("default").enqueue("worker.listener.hosting.listener_watchdog",
                                         result_ttl=-1, meta={"interval": 5},
                                         job_id="listener-watchdog")
            work_forever(lambda: JobWorker(["default"], connection=rq_connection()),
                         Outage("test"), threading.Event(), burst=True)
    finally:
        rq_log.removeHandler(handler)
        rq_log.level = level
    said = out.getvalue()
    assert "hourly-job" in said and said.count("Successfully completed") == 1, said
    assert "clean up result key manually" not in said, said
    assert "listener-watchdog" not in said and "listener_watchdog" not in said, said
    assert "cleaning registries" not in said, said


def test_rq_s_scheduler_failure_keeps_its_traceback_apart_too():
    """RQ's scheduler (forked by `flask worker`) writes its traceback into its message."""
    from worker import runner

    def emit(logger):
        logger.addFilter(runner._failure_traceback_apart)
        try:
            logger.error(runner.SCHEDULER_FAILED, 4242,
                         "Traceback (most recent call last):\n  File ...\nOSError: gone\n")
        finally:
            logger.removeFilter(runner._failure_traceback_apart)

    [line] = record_line({"LOG_FORMAT": "json"}, "worker", emit)
    entry = json.loads(line)
    assert entry["message"] == "Scheduler [PID 4242] raised an exception."
    assert entry["exc"].startswith("Traceback") and entry["exc"].endswith("OSError: gone")


def test_rq_s_lines_of_a_redis_outage_are_warnings_without_a_traceback():
    """Redis restarting under a worker: RQ's ERROR lines (a traceback, then "could not
    connect") become warnings; the worker waits and comes back by itself."""
    import redis

    from worker import runner

    def emit(logger):
        logger.addFilter(runner._no_redis_traceback)
        try:
            try:
                raise redis.ConnectionError("Connection refused")
            except redis.ConnectionError:
                logger.error("Worker %s: found an unhandled exception, quitting...", "w1",
                             exc_info=True)
            logger.error(runner.REDIS_UNREACHABLE, "w1", "Connection refused", 2)
            logger.error("Worker %s: job %s: something else", "w1", "j1")
        finally:
            logger.removeFilter(runner._no_redis_traceback)

    entries = [json.loads(line) for line in record_line({"LOG_FORMAT": "json"}, "worker", emit)]
    assert [e["level"] for e in entries] == ["WARNING", "WARNING", "ERROR"]
    assert "exc" not in entries[0]


@pytest.mark.parametrize("exc, expected", [
    (ValueError("bad\nsecond line"), "ValueError: bad"),
    (OSError(), "OSError: "),  # no message: the type alone, not an IndexError
    (RuntimeError("x" * 500), "RuntimeError: " + "x" * 286),
])
def test_an_error_as_text_is_its_type_and_first_line_within_the_limit(exc, expected):
    assert logs.error_text(exc) == expected
