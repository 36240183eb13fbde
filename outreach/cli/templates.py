"""``outreach templates check`` and ``outreach preview``."""

from __future__ import annotations

import itertools
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from outreach.cli.common import State, out_console, selection
from outreach.domain.campaign import CampaignInfo
from outreach.domain.errors import InputFileError, OutreachError
from outreach.domain.render import X_MAX_WEIGHTED, EmailTemplate, PressTemplate, XTemplate
from outreach.links import Links
from outreach.plans import campaign_for, find_plan, scan_plans
from outreach.templating import (
    CheckReport,
    TemplateLibrary,
    check_templates,
    missing_image_message,
    render_values,
    variant_language,
)

app = typer.Typer(no_args_is_help=True, help="Check templates before anything is sent.")

CampaignOpt = Annotated[
    str | None,
    typer.Option(
        "--campaign",
        help="Campaign id or plan file whose campaign the templates see (default: the only "
        "plan in schedules/, else the one whose steps use the template).",
    ),
]


def _library(state: State) -> TemplateLibrary:
    ws = state.settings.workspace
    return TemplateLibrary(ws / "templates", media=ws / "media")


def _by_campaign(state: State, library: TemplateLibrary, names: list[str] | None,
                 choice: str | None) -> tuple[list[tuple[CampaignInfo, list[str] | None]], list[tuple[str, str]]]:  # fmt: skip
    """The templates to check, grouped by the campaign each is checked against, and
    the templates whose campaign is not known (several plans, none or several of
    which use them): [(campaign, names or None for all)], [(file, why)]."""
    ws = state.settings.workspace
    entries = scan_plans(ws)
    if choice is not None or len(entries) <= 1:
        return [(campaign_for(ws, choice), names)], []
    groups: dict[str, tuple[CampaignInfo, list[str]]] = {}
    undecided: list[tuple[str, str]] = []
    for name in names or [f"{n}.{k}" for n, k in library.names()]:
        kind, variants = library.variants(name)
        file = variants.get(None) or next(iter(variants.values()))
        try:
            entry = find_plan(ws, template=f"{file.name}.{kind}", entries=entries)
        except InputFileError as exc:
            undecided.append((file.rel, f"{exc.message}; {exc.hint}"))
            continue
        assert entry is not None
        campaign = entry.info()
        groups.setdefault(campaign.id, (campaign, []))[1].append(name)
    return list(groups.values()), undecided


@app.command("check")
def check(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="Templates (default: all).", show_default=False)
    ] = None,
    sample: Annotated[int | None, typer.Option(help="Render for at most N contacts.")] = None,
    where: Annotated[
        str | None, typer.Option("--where", "-W", help="Render for these contacts (default: all).")
    ] = None,
    campaign_file: CampaignOpt = None,
) -> None:
    """Compile every template and render it for the contacts it can reach.

    Reports syntax errors with file and line, undefined values with the contact that
    hit them, X posts over 280, languages without a variant, empty subjects, HTML
    without a text part. Exits non-zero on any error.

    Example: outreach templates check cop-industry --sample 200
    """
    state: State = ctx.obj
    library = _library(state)
    links = Links(state.settings)
    store = state.services.contacts
    groups, undecided = _by_campaign(state, library, names or None, campaign_file)
    report = CheckReport()
    for campaign, wanted in groups:
        contacts = store.iterate(selection(None, where, required=False))
        if sample is not None:
            contacts = itertools.islice(contacts, sample)

        def urls_for(contact, campaign_id=campaign.id):  # type: ignore[no-untyped-def]
            return links.for_contact(campaign_id, "check", contact.id)

        report.merge(check_templates(library, campaign, contacts, names=wanted, urls_for=urls_for))
    report.add_problems(library)
    for file, why in undecided:
        report.add("error", file, why)
    console = out_console()
    for file, count in sorted(report.rendered.items()):
        if report.failed(file):
            continue
        lengths = report.x_lengths.get(file)
        extra = f"  posts: {', '.join(f'{n}/{X_MAX_WEIGHTED}' for n in lengths)}" if lengths else ""
        console.print(f"ok: templates/{escape(file)}: rendered {count:,} time(s){extra}")
    for finding in report.findings:
        color = {"error": "red", "warning": "yellow"}.get(finding.level, "cyan")
        console.print(f"[{color}]{escape(str(finding))}[/]")
    if report.errors:
        console.print(
            f"[red]{report.errors} error(s)[/]: nothing can be sent with these templates until they are fixed"
        )
        raise typer.Exit(1)
    console.print("no errors")


def preview(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Template name, e.g. cop-industry or cop-launch.x.")],
    contact: Annotated[
        str | None, typer.Option("--contact", "-c", help="Render for this contact (email address).")
    ] = None,
    lang: Annotated[
        str | None, typer.Option(help="Use this language instead of the contact's.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the HTML here (default: .outreach/preview/NAME.html)."),
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the HTML in a browser.")] = False,
    campaign_file: CampaignOpt = None,
) -> None:
    """Show a message as one recipient will get it.

    Example: outreach preview cop-industry --contact ana.tuilagi@example.org --lang fr --open
    """
    state: State = ctx.obj
    library = _library(state)
    kind, variants = library.variants(name)
    base = next(iter(variants.values())).name
    campaign = campaign_for(state.settings.workspace, campaign_file, template=f"{base}.{kind}")
    person = None
    if contact:
        person = state.services.contacts.get(contact)
        if person is None:
            raise OutreachError(f"no contact with the address {contact!r}")
    elif kind == "email":
        raise OutreachError(
            "an email preview needs --contact EMAIL",
            hint=f"outreach preview {name} --contact someone@example.org",
        )
    language = lang or (person.language if person else None)
    file = library.pick(variants, language)
    compiled = library.compile(file)
    step = {"id": "preview", "channel": kind, "template": file.name}
    urls = Links(state.settings).for_contact(campaign.id, "preview", person.id) if person else {}
    values = render_values(campaign, contact=person, step=step, urls=urls,
                           lang=variant_language(file, campaign))  # fmt: skip
    console = out_console()
    console.print(
        f"[bold]{escape(file.rel)}[/] for {escape(contact or 'the campaign')} (language {values['lang']})"
    )
    target = out or state.settings.state_dir / "preview" / f"{file.name}.{kind}.html"
    if isinstance(compiled, EmailTemplate):
        email = compiled.render(values)
        console.print(f"[bold]Subject:[/]   {escape(email.subject)}")
        if email.preheader:
            console.print(f"[bold]Preheader:[/] {escape(email.preheader)}")
        console.rule("text" + (" (made from the HTML)" if email.text_generated else ""))
        console.print(escape(email.text), end="")
        console.rule()
        html = email.html
    elif isinstance(compiled, XTemplate):
        posts = compiled.render(values)
        for i, post in enumerate(posts, 1):
            flag = "" if post.weighted_length <= X_MAX_WEIGHTED else "  [red]TOO LONG[/]"
            console.rule(f"post {i} of {len(posts)}: {post.weighted_length}/{X_MAX_WEIGHTED}")
            console.print(escape(post.text))
            if flag:
                console.print(flag)
        for path in library.missing_images(posts):
            console.print(f"[red]{escape(missing_image_message(path, library.media))}[/]")
        html = None
    else:
        assert isinstance(compiled, PressTemplate)
        press = compiled.render(values)
        if press.embargo:
            console.print(f"[bold red]{escape(press.embargo)}[/]")
        console.print(f"[bold]{escape(press.headline)}[/]")
        console.print(escape(press.dateline))
        html = press.html
    if html is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
        console.print(f"HTML written to {escape(str(target))}")
        if open_:
            webbrowser.open(target.resolve().as_uri())
