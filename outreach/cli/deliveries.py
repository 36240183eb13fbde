"""``outreach deliveries``: look at one delivery, and decide about an uncertain one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from outreach.cli.common import State, out_console, who

app = typer.Typer(no_args_is_help=True, help="Look at a delivery; retry or mark sent an uncertain one.")


@app.command("show")
def show(ctx: typer.Context, delivery: Annotated[int, typer.Argument(help="Delivery id.")]) -> None:
    """One delivery: what it is, its status, and its whole log.

    Example: outreach deliveries show 42
    """
    state: State = ctx.obj
    row = state.services.posts.delivery(delivery)
    console = out_console()
    what = (f"post {row['part'] + 1} of the thread" if row["channel"] == "x" else
            "the release" if row["channel"] == "press" else f"email to contact {row['contact_id']}")  # fmt: skip
    console.print(f"delivery {delivery}: {what}, step {escape(row['step_key'])} of {escape(row['campaign'])}")
    console.print(f"status: [bold]{row['status']}[/]; attempts {row['attempts']}"
                  + (f"; id {escape(row['message_id'])}" if row["message_id"] else ""))  # fmt: skip
    if row.get("content") and row["channel"] == "x":
        console.print(f"text: {escape(row['content']['text'])}")
    for e in state.services.outbox.events(delivery_id=delivery, limit=1000):
        reason = e["detail"].get("reason") or e["detail"].get("reply") or ""
        if e["detail"].get("decide"):
            reason += f" (outreach deliveries retry {delivery}, or mark-sent {delivery} --post-id N if it is on X)"
        console.print(f"  {e['at']:%Y-%m-%d %H:%M:%S}  {e['event']:<12} {escape(str(reason))}")


@app.command("retry")
def retry(
    ctx: typer.Context,
    delivery: Annotated[int, typer.Argument(help="Delivery id (outreach log shows them).")],
    by: Annotated[str | None, typer.Option(help="Who decides (default: your user name).")] = None,
) -> None:
    """Send (or post) an uncertain or failed delivery again, at the next 'outreach run'.

    Example: outreach deliveries retry 42
    """
    state: State = ctx.obj
    row = state.services.posts.retry(delivery, who(by))
    typer.echo(f"delivery {delivery} ({row['channel']}) queued again; 'outreach run' sends it")


@app.command("mark-sent")
def mark_sent(
    ctx: typer.Context,
    delivery: Annotated[int, typer.Argument(help="Delivery id.")],
    post_id: Annotated[str, typer.Option("--post-id", help="The id of the post found on X.")],
    by: Annotated[str | None, typer.Option(help="Who decides (default: your user name).")] = None,
) -> None:
    """Record that an uncertain post is on X after all; the thread goes on from it.

    Example: outreach deliveries mark-sent 42 --post-id 1880028106020515840
    """
    state: State = ctx.obj
    state.services.posts.mark_sent(delivery, post_id, who(by))
    typer.echo(f"delivery {delivery} marked sent as post {post_id}; the rest of its thread can go on")
