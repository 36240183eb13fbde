"""The structure the code keeps: a channel is declared in one registry and its sender
in one wiring line, and every other part (plan, check, schedule, firing, posting,
crash recovery, the log) reads them; the ports declare every method their callers
use; one resolver follows template inheritance; lower layers store facts, and only
the CLI names commands."""

from __future__ import annotations

import ast
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import DictLoader

from outreach import app as wiring
from outreach import ports
from outreach.app import build
from outreach.config import load_settings
from outreach.domain import channels
from outreach.domain.errors import TemplateError
from outreach.domain.inline_css import inline_html_block
from outreach.domain.layouts import layout_chain
from outreach.domain.render import EmailTemplate
from outreach.domain.sandbox import make_environments
from outreach.firing import fire
from outreach.ports import PostItem, PostResult
from outreach.posting import RENDERERS
from tests.conftest import ROOT, Cli

PACKAGE = ROOT / "outreach"
ENV = {"OUTREACH_SECRET_KEY": "k"}


class Wire:
    """A news wire that takes releases: what a channel's sender is (``ports.PostTarget``),
    recording every item it is given."""

    name = "the test wire"
    service = "the wire"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.items: list[tuple[dict[str, Any], datetime]] = []

    def facts(self, item: PostItem) -> dict[str, Any]:
        return {"slug": item.content["slug"]}

    def deliver(self, item: PostItem, at: datetime) -> PostResult:
        if self.fail:
            raise RuntimeError("the wire hung up mid-answer")
        self.items.append((item.content, at))
        return PostResult(True, f"wire-{len(self.items)}", code=200, text="taken")


def _register(monkeypatch: pytest.MonkeyPatch, target: Wire, *, resend: bool) -> None:
    """What adding a channel takes: one registration line and one sender line."""
    monkeypatch.setattr(channels, "_REGISTRY", dict(channels._REGISTRY))  # undone after the test
    channels.register(channels.Channel("wire", "press", per_contact=False, resend_after_crash=resend,
                                       after_crash="sent to the wire again", units="release(s)"))  # fmt: skip
    monkeypatch.setitem(wiring.SENDERS, "wire", lambda _services, _local: target)


def _wire_workspace(tmp_path: Path) -> tuple[Cli, Path]:
    ws = tmp_path / "ws"
    for folder in ("contacts", "templates"):
        shutil.copytree(ROOT / folder, ws / folder)
    launch = (datetime.now(UTC) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    plan = ws / "schedules" / "wire.yaml"
    plan.parent.mkdir()
    plan.write_text(yaml.safe_dump({
        "campaign": {"id": "wire-test", "name": "Wire test", "from": "team@example.org"},
        "launch": f"{launch:%Y-%m-%d %H:%M} UTC",
        "links": {"guidelines": "https://example.org/g", "pledge": "https://example.org/p",
                  "press": "https://example.org/n"},
        "steps": [{"id": "release", "channel": "wire", "template": "cop-release", "at": "T+0"}],
    }))  # fmt: skip
    cli = Cli(ws, env=ENV)
    cli("contacts", "import", *map(str, sorted((ws / "contacts").glob("*.csv"))))
    return cli, plan


def test_a_channel_added_by_registration_alone_is_checked_scheduled_fired_posted_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = Wire()
    _register(monkeypatch, wire, resend=True)
    cli, plan = _wire_workspace(tmp_path)
    cli("plan", "check", str(plan))  # exit 0: the plan and its template pass
    cli("schedule", str(plan))
    cli("approve", "wire-test", "--by", "Ana")
    services = build(load_settings(cli.workspace, env={"OUTREACH_DATABASE_URL": "", **ENV}))
    try:
        (step,) = services.outbox.steps("wire-test")
        assert step.channel == "wire"
        assert fire(services, "wire-test", step.key, services.clock()) == "active"
        assert services.outbox.counts(step_id=step.id) == {"queued": 1}
        # a sender stops while the release is in flight: the registry says it goes again
        assert services.posts.claim(channels=["wire"]) is not None
        assert services.outbox.recover() == 1
        assert services.outbox.counts(step_id=step.id) == {"queued": 1}
        cli("run", "--until-idle")  # the Poster publishes it through the registered sender
        assert services.outbox.counts(step_id=step.id) == {"sent": 1}
        (sent,) = services.outbox.events(step_key=step.key, event="sent")
        assert sent["detail"]["post_id"] == "wire-1" and sent["detail"]["slug"] == "wire-test-release"
        assert "sent to the wire again" in services.outbox.events(step_key=step.key, event="uncertain")[0][
            "detail"]["reason"]  # fmt: skip
    finally:
        services.close()
    (content, _at), = wire.items
    assert content["headline"].startswith("ITU and UNICEF release Guidelines")


def test_an_unknown_outcome_on_a_channel_never_sent_again_blindly_waits_for_a_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(monkeypatch, Wire(fail=True), resend=False)
    cli, plan = _wire_workspace(tmp_path)
    cli("schedule", str(plan))
    cli("approve", "wire-test", "--by", "Ana")
    cli("run", "--until-idle")
    services = build(load_settings(cli.workspace, env={"OUTREACH_DATABASE_URL": "", **ENV}))
    try:
        (event,) = services.outbox.events(campaign="wire-test", event="uncertain")
    finally:
        services.close()
    reason = event["detail"]["reason"]
    assert "it may or may not be on the wire" in reason and "RuntimeError" in reason
    assert "outreach" not in reason and event["detail"]["decide"]  # a fact, stored
    shown = " ".join(cli("log", "--event", "uncertain").stdout.replace("│", " ").split())  # rows unwrapped
    assert f"outreach deliveries retry {event['delivery_id']}" in shown  # the CLI names the command


def test_every_channel_that_is_not_per_contact_has_a_sender_and_a_renderer() -> None:
    posted = channels.posted()
    assert set(posted) == {"x", "press", "report"}
    assert set(posted) <= set(wiring.SENDERS)
    assert {channels.channel(n).template_kind for n in posted} <= set(RENDERERS)


# -- ports: complete -------------------------------------------------------------------

PORTS = {"outbox": ports.Outbox, "contacts": ports.ContactStore, "posts": ports.Posts, "users": ports.Users,
         "consent": ports.Consent, "processes": ports.Processes, "inbound": ports.Inbound}  # fmt: skip


def _members(protocol: type) -> set[str]:
    names = set(dir(protocol))
    for base in protocol.__mro__:
        names |= set(getattr(base, "__annotations__", {}))
    return names


def _port_uses() -> dict[str, dict[str, set[str]]]:
    """{port: {attribute: files}} for ``X.outbox.attr`` (and ``outbox = X.outbox; outbox.attr``)
    everywhere outside db/ (which implements them)."""
    uses: dict[str, dict[str, set[str]]] = {p: {} for p in PORTS}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "db" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        aliases: dict[str, str] = {}  # local name -> port, where assigned from X.port
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute) and node.value.attr in PORTS:
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        aliases[t.id] = node.value.attr
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            port = None
            if isinstance(node.value, ast.Attribute) and node.value.attr in PORTS:
                port = node.value.attr
            elif isinstance(node.value, ast.Name) and node.value.id in aliases:
                port = aliases[node.value.id]
            if port is not None:
                uses[port].setdefault(node.attr, set()).add(str(path.relative_to(ROOT)))
    return uses


def test_the_ports_declare_every_method_their_callers_use() -> None:
    uses = _port_uses()
    assert {"claim", "record", "materialize"} <= set(uses["outbox"])  # the walk finds them
    assert {"claim", "materialize", "retry", "mark_sent"} <= set(uses["posts"])
    assert {"listed", "beat", "lead"} <= set(uses["processes"]) and "authenticate" in uses["users"]
    missing = {f"services.{port}.{attr} ({', '.join(sorted(files))})"
               for port, used in uses.items() for attr, files in used.items()
               if attr not in _members(PORTS[port])}  # fmt: skip
    assert not missing, f"used but not declared in outreach/ports.py: {sorted(missing)}"


def test_classes_that_take_ports_are_typed_with_them() -> None:
    import inspect
    import typing

    from outreach.dispatch import Dispatcher
    from outreach.posting import Poster

    poster = typing.get_type_hints(Poster.__init__)
    assert poster["posts"] is ports.Posts and typing.get_args(poster["targets"]) == (str, ports.PostTarget)
    assert typing.get_type_hints(Dispatcher.__init__)["channel"] is ports.EmailChannel
    assert {"size", "local"} <= _members(ports.EmailChannel)  # what the dispatcher and app read
    assert "getattr(self.channel" not in inspect.getsource(Dispatcher)


# -- one resolver for layouts ------------------------------------------------------------


@pytest.mark.parametrize(("files", "message", "where"), [
    ({"a.email.j2": '{% extends "b.j2" %}{% block subject %}s{% endblock %}',
      "b.j2": '{% extends "c.j2" %}{% block html %}<p>b</p>{% endblock %}', "c.j2": '\n{% extends "b.j2" %}'},
     "layouts extend each other in a loop: a.email.j2 -> b.j2 -> c.j2 -> b.j2", ("c.j2", 2)),
    ({"a.email.j2": '{% block subject %}s{% endblock %}\n\n{% extends name %}'},
     "the layout's name must be written as a string", ("a.email.j2", 3)),
    ({"a.email.j2": '{% extends "_layouts/gone.j2" %}{% block subject %}s{% endblock %}'},
     "layout '_layouts/gone.j2' not found", ("a.email.j2", 1)),
])  # fmt: skip
def test_the_renderer_and_the_css_inliner_refuse_the_same_layouts_alike(
    files: dict[str, str], message: str, where: tuple[str, int]
) -> None:
    text_env, html_env = make_environments(DictLoader(files))
    errors = []
    for attempt in (lambda: layout_chain(text_env, "a.email.j2"),
                    lambda: EmailTemplate(text_env, html_env, "a.email.j2"),
                    lambda: inline_html_block(html_env, "a.email.j2")):  # fmt: skip
        with pytest.raises(TemplateError) as caught:
            attempt()
        errors.append((caught.value.detail, caught.value.file, caught.value.line))
    assert errors == [(message, *where)] * 3


def test_a_layout_chain_is_followed_nearest_first() -> None:
    text_env, _html = make_environments(DictLoader({
        "a.email.j2": '{% extends "b.j2" %}', "b.j2": '{% extends "c.j2" %}', "c.j2": "{% block html %}{% endblock %}",
    }))  # fmt: skip
    assert layout_chain(text_env, "a.email.j2") == ["b.j2", "c.j2"]
    assert layout_chain(text_env, "c.j2") == []


# -- facts below, commands at the edge ------------------------------------------------------


def _command_words() -> set[str]:
    import typer.main

    from outreach.cli import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _stored_reasons(tree: ast.AST) -> list[ast.expr]:
    """Expressions stored as a log event's or a step's reason: ``{"reason": ...}``,
    ``detail["reason"] = ...``, ``reason=...``, and the reason of ``set_step_status`` /
    ``skip_pending``."""
    out: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            out += [v for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and k.value == "reason"]  # fmt: skip
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant)
                   and t.slice.value == "reason" for t in node.targets):  # fmt: skip
                out.append(node.value)
        elif isinstance(node, ast.Call):
            out += [k.value for k in node.keywords if k.arg == "reason"]
            name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            position = {"set_step_status": 2, "skip_pending": 1}.get(name)
            if position is not None and len(node.args) > position:
                out.append(node.args[position])
    return out


def _text(expr: ast.expr) -> str:
    """The literal text of a string expression (an f-string's constant parts)."""
    return " ".join(n.value for n in ast.walk(expr) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def test_stored_reasons_hold_facts_and_no_commands_outside_the_cli() -> None:
    import re

    words = _command_words()
    assert {"run", "schedule", "deliveries", "resume"} <= words
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ("cli", "web"):
            continue
        for expr in _stored_reasons(ast.parse(path.read_text("utf-8"))):
            for m in re.finditer(r"\boutreach ([a-z-]+)", _text(expr)):
                if m.group(1) in words:
                    found.append(f"{path.relative_to(ROOT)}:{expr.lineno}: {m.group(0)}")
    assert not found, f"a command in a stored reason (store a fact; cli/ names the command): {found}"


def test_hints_of_lower_layers_name_no_command() -> None:
    """Below cli/ and web/, an error carries a code and facts (``cli.phrases`` names the
    command for it); a ``hint=`` there is advice that holds everywhere."""
    import re

    words = _command_words()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ("cli", "web"):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call):
                for k in node.keywords:
                    if k.arg == "hint":
                        for m in re.finditer(r"\boutreach ([a-z-]+)", _text(k.value)):
                            if m.group(1) in words:
                                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {m.group(0)}")
    assert not found, f"a command in a lower layer's hint (raise with code= and facts): {found}"


def test_every_code_the_phrasebook_knows_gives_a_hint_from_its_facts() -> None:
    from outreach.cli.phrases import HINTS, hint_for
    from outreach.domain.errors import OutreachError

    class Facts(dict):  # whatever fact a phrase asks for is there
        def __missing__(self, key: str) -> str:
            return f"<{key}>"

    facts = Facts()
    for code in HINTS:
        error = OutreachError("x", code=code)
        error.facts = facts
        hint = hint_for(error)
        assert hint and "{" not in hint, code
    assert hint_for(OutreachError("x", code="unknown_step")) is None  # a missing fact: no half a command
