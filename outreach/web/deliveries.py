"""One delivery: what it is, its status and its whole log; and a person's decision
about it with the CLI's rules (``outreach deliveries retry / mark-sent``): a failed or
uncertain delivery goes again, or an uncertain post found on X is marked sent
(operator)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from outreach import review
from outreach.domain.errors import OutreachError
from outreach.web.app import web_of
from outreach.web.auth import staff

RETRYABLE = ("uncertain", "failed")  # db.posts.retry's rule
MARKABLE = ("uncertain", "failed", "deferred")  # db.posts.mark_sent's rule
DONE = {"retried": "Queued again: the next 'outreach run' sends it.",
        "marked": "Marked sent: the rest of its thread can go on."}  # fmt: skip


@staff("viewer")
def delivery(request: Request) -> Response:
    web = web_of(request)
    delivery_id = request.path_params["delivery"]
    row = web.services.posts.delivery(delivery_id)
    events = web.services.outbox.events(delivery_id=delivery_id, limit=1000)
    address = web.consent.address(row["contact_id"]) if row["contact_id"] is not None else None
    return web.page(request, "delivery.html", row=row, events=events, address=address,
                    detail=review.detail, retryable=row["status"] in RETRYABLE,
                    markable=row["status"] in MARKABLE and row["channel"] != "email",
                    done=DONE.get(request.query_params.get("done", "")))  # fmt: skip


@staff("operator")
def retry(request: Request) -> Response:
    delivery_id = request.path_params["delivery"]
    web_of(request).services.posts.retry(delivery_id, request.state.user.name)
    return RedirectResponse(f"/deliveries/{delivery_id}?done=retried", status_code=303)


@staff("operator")
async def mark_sent(request: Request) -> Response:
    delivery_id = request.path_params["delivery"]
    post_id = str((await request.form()).get("post_id") or "").strip()
    if not post_id:
        raise OutreachError("say the id of the post (or release) that was found", code="no_post_id")
    posts = web_of(request).services.posts
    await run_in_threadpool(posts.mark_sent, delivery_id, post_id, request.state.user.name)
    return RedirectResponse(f"/deliveries/{delivery_id}?done=marked", status_code=303)


ROUTES = [
    Route("/deliveries/{delivery:int}", delivery, methods=["GET"]),
    Route("/deliveries/{delivery:int}/retry", retry, methods=["POST"]),
    Route("/deliveries/{delivery:int}/mark-sent", mark_sent, methods=["POST"]),
]
