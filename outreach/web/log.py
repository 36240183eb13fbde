"""The delivery log: the CLI's filters (campaign, step, wave, channel, event, contact,
since, until) and a search by recipient, newest first, a page at a time by keyset
(``?before=ID``); ``/log.csv`` streams the filtered view whole, oldest first."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from outreach import review
from outreach.app import Services
from outreach.web.app import web_of
from outreach.web.auth import staff

FILTERS = ("campaign", "step", "wave", "channel", "event", "contact", "since", "until", "q")
PAGE = 50


def _filter(request: Request) -> tuple[review.LogFilter, dict[str, str]]:
    """The filter the query string asks for, and those of its fields that were given."""
    given = {k: v.strip() for k in FILTERS if (v := request.query_params.get(k, "")).strip()}
    since = review.parse_when(given["since"]) if "since" in given else None
    until = review.parse_when(given["until"], end=True) if "until" in given else None
    flt = review.LogFilter(
        campaign=given.get("campaign"), step=given.get("step"), wave=given.get("wave"),
        channel=given.get("channel"), event=given.get("event"), contact=given.get("contact"),
        since=since, until=until, search=given.get("q"),
    )  # fmt: skip
    return flt, given


def before_of(request: Request) -> int | None:
    text = request.query_params.get("before", "")
    if not text:
        return None
    if not text.isdigit():
        raise HTTPException(400, f"before={text!r} is not an event id")
    return int(text)


@staff("viewer")
def log_page(request: Request) -> Response:
    web = web_of(request)
    flt, given = _filter(request)
    events, cursor = review.log_page(web.services, flt, before=before_of(request), limit=PAGE)
    older = f"/log?{urlencode({**given, 'before': cursor})}" if cursor is not None else None
    return web.page(request, "log.html", events=events, given=given, older=older,
                    newest=f"/log?{urlencode(given)}", csv_link=f"/log.csv?{urlencode(given)}",
                    recipient=review.recipient, detail=review.detail)  # fmt: skip


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | int | None) -> str | int | None:
    """A spreadsheet opens what servers and contacts wrote as text, never as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _csv_rows(services: Services, flt: review.LogFilter) -> Iterator[str]:
    """The header and every event's row (``LOG_COLUMNS``' order), 500 rows a piece."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(review.LOG_COLUMNS)
    for n, event in enumerate(review.iter_log(services, flt), 1):
        writer.writerow([_cell(v) for v in review.log_record(event).values()])  # in LOG_COLUMNS' order
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@staff("viewer")
def log_csv(request: Request) -> Response:
    """The filtered view as CSV, streamed (memory stays flat however long the log)."""
    flt, _given = _filter(request)
    return StreamingResponse(_csv_rows(web_of(request).services, flt), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": 'attachment; filename="outreach-log.csv"'})  # fmt: skip


ROUTES = [
    Route("/log", log_page, methods=["GET"]),
    Route("/log.csv", log_csv, methods=["GET"]),
]
