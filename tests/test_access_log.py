"""gunicorn.conf.py's access line: the atoms of our format, made without gunicorn's full set,
read exactly as gunicorn's own would; a webhook's secret path is cut; an operator's own
format gets every atom gunicorn offers."""

import datetime
import io
import logging
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

CONF = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))


def access_line(access_log_format, path="/api/v1/events", status="202 ACCEPTED", sent=117):
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", access_log_format)
    logger = CONF["AccessLogger"](cfg)
    out = io.StringIO()
    [handler] = [h for h in logger.access_log.handlers if type(h) is logging.StreamHandler]
    handler.setStream(out)
    resp = SimpleNamespace(status=status, sent=sent,
                           headers=[("Content-Type", "application/json"), ("X-Request-ID", "r-1")])
    req = SimpleNamespace(headers=[("USER-AGENT", 'curl "quoted"'), ("HOST", "localhost")])
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "PATH_INFO": path,
               "RAW_URI": path + "?api_key=secret", "QUERY_STRING": "api_key=secret",
               "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_USER_AGENT": 'curl "quoted"'}
    took = datetime.timedelta(seconds=1, microseconds=234_567)
    logger.access(resp, req, environ, took)
    ours = logger.atoms(resp, req, environ, took)
    theirs = Logger.atoms(logger, resp, req, environ, took)
    return out.getvalue(), ours, theirs


def test_our_format_reads_as_gunicorns_own_atoms_would():
    line, ours, theirs = access_line(CONF["ACCESS_FORMAT"])
    theirs["t"] = ours["t"]  # the clock may have ticked between the two
    wrap = Logger.atoms_wrapper_class
    assert CONF["ACCESS_FORMAT"] % wrap(ours) == CONF["ACCESS_FORMAT"] % wrap(theirs)
    assert '"POST /api/v1/events HTTP/1.1" 202 117 1234ms' in line
    assert line.startswith("127.0.0.1 [") and "secret" not in line


@pytest.mark.parametrize("status", ["202 ACCEPTED", 202])
def test_a_status_given_as_text_or_number_and_nothing_sent(status):
    line, ours, theirs = access_line(CONF["ACCESS_FORMAT"], status=status, sent=None)
    assert str(ours["s"]) == str(theirs["s"]) == "202" and ours["b"] == theirs["b"] == "-"
    assert '" 202 - 1234ms' in line


def test_a_webhooks_secret_path_is_cut_in_either_format():
    path = "/hooks/abcdefghij" + "k" * 30
    for access_log_format in (CONF["ACCESS_FORMAT"], '%(U)s %({user-agent}i)s'):
        line, _, _ = access_line(access_log_format, path=path)
        assert "/hooks/abcdefghij..." in line and "k" * 30 not in line


def test_an_operators_own_format_gets_every_atom():
    line, ours, _ = access_line('%(r)s %({user-agent}i)s %({x-request-id}o)s %(D)s')
    expected = 'POST /api/v1/events?api_key=secret HTTP/1.1 curl \\"quoted\\" r-1 1234567'
    assert line.strip() == expected
    assert "{host}i" in ours


def test_the_line_carries_the_request_id_answered():
    from webapp.core import logs

    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(logs.current())

    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", CONF["ACCESS_FORMAT"])
    logger = CONF["AccessLogger"](cfg)
    logger.access_log.addHandler(Catch())
    resp = SimpleNamespace(status="200 OK", sent=2, headers=[("x-request-id", "abc-123")])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
    logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(0))
    assert seen == ["abc-123"] and logs.current() is None
