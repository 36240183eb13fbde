"""``outreach serve``: the web pages, with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from outreach.cli.common import State, err_console, out_console


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="The address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.", min=1, max=65535)] = 8000,
    check: Annotated[bool, typer.Option("--check", help="Check the settings and the database, "
                                        "say what would be served, and stop without serving.")] = False,
) -> None:
    """Serve the staff pages (campaigns, the delivery log, contacts; a sign-in with
    'outreach users add') and the public routes that messages link to: unsubscribe
    (RFC 8058 one-click too), view in browser, the newsroom, and /healthz. Put it
    behind a TLS proxy at the address of public_url (OUTREACH_PUBLIC_URL), for
    example with --host 0.0.0.0 --port 8080.

    Example: outreach serve --check
    """
    from outreach.web import create_app

    state: State = ctx.obj
    services = state.services
    settings = services.settings
    web_app = create_app(services)
    console, errors = out_console(), err_console()
    if not services.users.all():
        errors.print("[yellow]note:[/] nobody can sign in yet: outreach users add NAME --role admin")
    if not settings.public_url.startswith("https:") and host not in ("127.0.0.1", "localhost", "::1"):
        errors.print(f"[yellow]note:[/] public_url is {escape(settings.public_url)}: sign-in cookies "
                     "are sent without TLS; serve behind an https address and set OUTREACH_PUBLIC_URL")  # fmt: skip
    console.print(f"staff pages and public links at http://{escape(host)}:{port}/ "
                  f"(links in messages point at {escape(settings.public_url)})")  # fmt: skip
    if check:
        console.print("settings and database are in order; not serving (--check)")
        return
    _run(web_app, host, port)


def _run(web_app, host: str, port: int) -> None:  # type: ignore[no-untyped-def]
    import logging

    import uvicorn

    from outreach.web.security import RedactLinks

    config = uvicorn.Config(web_app, host=host, port=port, server_header=False, proxy_headers=True)
    logging.getLogger("uvicorn.access").addFilter(RedactLinks())
    uvicorn.Server(config).run()
