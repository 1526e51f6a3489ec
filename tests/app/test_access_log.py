"""The access log's lines: those gunicorn's own logger writes, made from the atoms the format names only."""

from __future__ import annotations

import ast
import base64
import datetime
import logging

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.access_log import ACCESS_LOG_FORMAT, AccessLogger
from app.request_id import RequestIdFilter
from testing.processes import REPO

# Every atom gunicorn documents, headers and environ variables in either case, a repeated header, and names
# gunicorn lacks (which stand as "-").
EVERY_ATOM = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(m)s %(U)s %(q)s %(H)s %(b)s %(B)s "%(f)s" "%(a)s" %(T)s %(D)s %(M)s '
    "%(L)s %(p)s %({host}i)s %({HOST}i)s %({x-twice}i)s %({x-request-id}o)s %({Content-Type}o)s "
    "%({remote_addr}e)s %({wsgi.url_scheme}e)s %({missing}i)s %({missing}o)s %({missing}e)s %({host}x)s %(zz)s"
)


class Response:
    def __init__(self, status, sent, headers):
        self.status, self.sent, self.headers = status, sent, headers


class Request:
    headers = [("HOST", "127.0.0.1:8000"), ("X-TWICE", "first"), ("USER-AGENT", 'wrk "4"'), ("X-TWICE", "second")]


def environ(**extra):
    return {
        "REQUEST_METHOD": "GET",
        "RAW_URI": '/recommendations/u"1?limit=20&offset=40',
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": '/recommendations/u"1',
        "QUERY_STRING": "limit=20&offset=40",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": 'wrk "4"',
        "wsgi.url_scheme": "http",
        **extra,
    }


def written_record(logger_class, access_log_format, resp, env):
    """The record ``logger_class`` logs for one request in ``access_log_format``."""
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", access_log_format)
    logger = logger_class(config)
    logger.now = lambda: "[01/Dec/2026:12:00:00 +0000]"  # both loggers at the same instant
    records = []
    logger.access_log = logging.Logger(f"test-{logger_class.__name__}")
    logger.access_log.addHandler(logging.Handler())
    logger.access_log.handlers[0].emit = records.append
    logger.access(resp, Request, env, datetime.timedelta(seconds=2, microseconds=345678))
    [record] = records
    return record


def written_line(logger_class, access_log_format, resp, env):
    """The message ``logger_class`` logs for one request in ``access_log_format``."""
    return written_record(logger_class, access_log_format, resp, env).getMessage()


RESPONSES = {
    "answered": Response("200 OK", 1234, [("Content-Type", "application/json"), ("X-Request-ID", 'r"42')]),
    "nothing sent": Response("503 SERVICE UNAVAILABLE", None, []),
    "status as a number": Response(404, 0, [("x-request-id", "a"), ("X-Request-Id", "b")]),
}


@pytest.mark.parametrize("access_log_format", [EVERY_ATOM, ACCESS_LOG_FORMAT], ids=["every atom", "the service's"])
@pytest.mark.parametrize("response", RESPONSES.values(), ids=RESPONSES.keys())
@pytest.mark.parametrize(
    "env",
    [environ(), environ(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:secret").decode(), HTTP_REFERER="x")],
    ids=["anonymous", "a basic-auth user"],
)
def test_a_line_is_the_one_gunicorns_logger_writes(access_log_format, response, env):
    assert written_line(AccessLogger, access_log_format, response, env) == written_line(
        Logger, access_log_format, response, env
    )


def test_the_services_line():
    line = written_line(AccessLogger, ACCESS_LOG_FORMAT, RESPONSES["answered"], environ())
    assert line == (
        '127.0.0.1 "GET /recommendations/u\\"1?limit=20&offset=40 HTTP/1.1" 200 1234 2345ms request_id=r\\"42'
    )


@pytest.mark.parametrize(
    ("response", "request_id"),
    [(RESPONSES["answered"], 'r"42'), (RESPONSES["nothing sent"], "-"), (RESPONSES["status as a number"], "b")],
    ids=RESPONSES.keys(),
)
def test_a_lines_record_carries_the_responses_request_id_as_sent(response, request_id):
    record = written_record(AccessLogger, ACCESS_LOG_FORMAT, response, environ())
    assert record.request_id == request_id
    RequestIdFilter().filter(record)  # the handlers' filter keeps it
    assert record.request_id == request_id


def test_the_service_logs_access_with_them():
    """gunicorn.conf.py (read, not run: running it would set up the web's metrics directory) names both."""
    settings = {
        target.id: ast.unparse(statement.value)
        for statement in ast.parse((REPO / "gunicorn.conf.py").read_text()).body
        if isinstance(statement, ast.Assign)
        for target in statement.targets
    }
    assert settings["access_log_format"] == "ACCESS_LOG_FORMAT"
    assert settings["logger_class"] == "'app.access_log.AccessLogger'"
