"""Every command example that is published works: each ``outreach ...`` line of the
README's sh blocks and each ``Example:`` line of a command's ``--help`` runs through the
real CLI against a copy of the sample workspace, and exits 0.

The examples share one workspace and run in the order a person would use them (``ORDER``:
the state each needs comes from the ones before it, ``schedule`` before ``approve``,
``approve`` before ``status``, ``cancel`` last), each as its own test, named by the
example; a test run alone (``pytest -k``) first runs the ones before it. A command
without an example in its help fails ``test_every_command_shows_an_example``.

What a shell would do is done here: the current folder is the workspace, ``~`` is a
home folder of the test's own, globs are expanded (a pattern that matches nothing stays
as it is, as in sh), ``NAME=value`` before ``outreach`` sets the environment. What the
test changes in an example is in ``_adjusted`` and ``_prepared``, each with why.
"""

from __future__ import annotations

import glob
import re
import shlex
import shutil
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.core import TyperCommand, TyperGroup

from outreach.cli import app
from tests.conftest import ROOT, Cli

README = ROOT / "README.md"


@dataclass(frozen=True)
class Example:
    """One published command line: its words after ``outreach``, the environment set
    before it, and where it is published."""

    text: str
    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def command(self) -> str:
        """The command's path in the tree, e.g. ``contacts import`` or ``run``."""
        return _command_path(self.args)


# -- collecting the examples ------------------------------------------------------


def _outside_quotes(line: str, position: int) -> bool:
    try:
        shlex.split(line[:position])
    except ValueError:  # no closing quotation
        return False
    return True


def _published(line: str) -> list[str]:
    """``CMD [/ CMD ...] [# comment]`` -> each CMD as written (a ``#`` or `` / ``
    inside quotes is part of a word)."""
    comment = next(
        (m.start() for m in re.finditer(r"(?:^|\s)#", line) if _outside_quotes(line, m.start())),
        len(line),
    )
    line = line[:comment]
    cuts = [
        m for m in re.finditer(r"\s/\s+(?=outreach\s)", line) if _outside_quotes(line, m.start())
    ]
    bounds = [0, *(x for m in cuts for x in (m.start(), m.end())), len(line)]
    return [" ".join(line[a:b].split()) for a, b in zip(bounds[::2], bounds[1::2], strict=True)]


def _split_command(text: str, where: str) -> tuple[dict[str, str], list[str]]:
    """``[NAME=value ...] outreach ARGS`` -> (environment, ARGS)."""
    words = shlex.split(text)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _eq, value = words.pop(0).partition("=")
        env[name] = value
    if not words or words[0] != "outreach":
        raise AssertionError(f"{where}: not an outreach command: {text!r}")
    return env, words[1:]


def readme_lines() -> Iterator[tuple[str, str]]:
    """(line, where) for each line of a ```sh block that starts with ``outreach ``
    (a line that is only a comment, such as one continuing the comment above, is not)."""
    block: str | None = None  # the language of the fenced block the line is in
    for number, line in enumerate(README.read_text("utf-8").splitlines(), 1):
        fence = line.strip()
        if fence.startswith("```"):
            block = fence[3:].strip() if block is None else None
            continue
        if block == "sh" and line.lstrip().startswith("outreach "):
            yield line.strip(), f"README.md:{number}"


def command_tree() -> Iterator[tuple[str, TyperCommand | TyperGroup]]:
    """(path, command) for the root, every group and every command under them."""

    def walk(command, path: str):  # type: ignore[no-untyped-def]
        yield path, command
        for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
            yield from walk(sub, f"{path} {name}".strip())

    yield from walk(typer.main.get_command(app), "")


def help_examples(command) -> list[str]:  # type: ignore[no-untyped-def]
    """The ``Example:`` lines of a command's help text, without the word Example."""
    return [
        line.strip().removeprefix("Example:").strip()
        for line in (command.help or "").splitlines()
        if line.strip().startswith("Example:")
    ]


def _is_group(command) -> bool:  # type: ignore[no-untyped-def]
    return bool(getattr(command, "commands", None))


def _command_path(args: tuple[str, ...] | list[str]) -> str:
    """The command words of ``args``: global options (``-w DIR``, ``--rehearsal``)
    skipped, then names down the tree for as long as they are groups."""
    command = typer.main.get_command(app)
    words = list(args)
    path: list[str] = []
    while words and _is_group(command):
        word = words.pop(0)
        if word.startswith("-"):
            if word in ("-w", "--workspace"):
                words.pop(0)
            continue
        sub = command.commands.get(word)  # type: ignore[attr-defined]
        if sub is None:
            return " ".join([*path, word])  # not a command: running it will say so
        path.append(word)
        command = sub
    return " ".join(path)


def collect() -> list[Example]:
    """README examples, then help examples; the same command line published in both
    places (or twice) is one example that names all its sources."""
    found: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], Example] = {}

    def add(line: str, where: str) -> None:
        for text in _published(line):
            env, args = _split_command(text, where)
            key = (tuple(sorted(env.items())), tuple(args))
            old = found.get(key)
            sources = (*old.sources, where) if old else (where,)
            found[key] = Example(old.text if old else text, key[0], key[1], sources)

    for line, where in readme_lines():
        add(line, where)
    for path, command in command_tree():
        for line in help_examples(command):
            add(line, f"outreach {path} --help".replace("  ", " "))
    return list(found.values())


# The order a person would run them in: what each needs comes from the ones before it.
# A launch is moved before the campaign is approved: a move changes what was approved
# (it asks for 'outreach approve' again), and send, run and the thread need approval.
# Commands not named here run at "*" (after everything that sets up a campaign, and
# before cancel, which ends it); name a new command where it belongs.
ORDER = (
    "init", "config", "db upgrade",
    "contacts import", "contacts count", "contacts list", "contacts show", "contacts export",
    "contacts tag", "contacts untag",
    "templates check", "preview", "plan check", "plan show",
    "rehearse", "demo",
    "schedule", "reschedule", "approve", "status", "pause", "resume",
    "send", "run", "log",
    "deliveries show", "deliveries mark-sent", "deliveries retry",
    "*",
    "contacts unsubscribe", "contacts delete",
    "cancel",
)  # fmt: skip


def ordered(examples: list[Example]) -> list[Example]:
    def rank(example: Example) -> int:
        return ORDER.index(example.command if example.command in ORDER else "*")

    return sorted(examples, key=rank)  # stable: README order, then help order


EXAMPLES = ordered(collect())


# -- what the test changes in an example, and why -----------------------------------

# The plan's rehearsal holds its clock while each step is sent, so its speed changes
# only how long it sleeps between steps: at the published speeds the sample plan's
# 24 days take about 4 minutes (--speed 1d=10s) and the demo's about 40 s (1w=10s).
FAST = "30d=1s"


def _adjusted(args: list[str]) -> list[str]:
    command = _command_path(args)
    if command in ("rehearse", "demo"):
        args = [a for a in args if not a.startswith("--speed=")]
        if "--speed" in args:
            args[args.index("--speed") + 1] = FAST
        else:
            args += ["--speed", FAST]
    if command == "run" and "--until-idle" not in args:
        args.append("--until-idle")  # it would otherwise wait for work forever
    return args


def _shell_words(args: tuple[str, ...], home: Path) -> list[str]:
    """What sh would pass: ``~/`` expanded, globs matched in the current folder (the
    workspace); a pattern that matches nothing is left as it is."""
    words = []
    for word in args:
        if word == "~" or word.startswith("~/"):
            word = str(home / word[2:])
        if any(ch in word for ch in "*?[") and (matches := sorted(glob.glob(word))):
            words.extend(matches)
        else:
            words.append(word)
    return words


# Contacts the examples name that the sample's invented stakeholders do not include:
# added to the workspace so that the examples act on someone.
NAMED_IN_EXAMPLES = """\
email,name,organization,kind,sector,country,language,tags
ana.tuilagi@example.org,Ana Tuilagi,Blue Telecom Samoa,industry,mobile operator,WS,en,cop-2014
someone@example.org,Someone Else,Example Partner,partner,,FJ,en,responded
"""


@dataclass
class Workspace:
    cli: Cli
    home: Path
    done: set[Example] = field(default_factory=set)

    @property
    def path(self) -> Path:
        return self.cli.workspace


def _sample_workspace(base: Path) -> Workspace:
    """A copy of the sample workspace with its contacts imported (as ``sample_ws``),
    and the contacts the examples name."""
    ws = base / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    named = base / "named-in-examples.csv"
    named.write_text(NAMED_IN_EXAMPLES, "utf-8")
    cli = Cli(ws)
    cli("contacts", "import", *map(str, sorted((ws / "contacts").glob("*.csv"))), str(named))
    (base / "home").mkdir()
    return Workspace(cli, base / "home")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One workspace for all the examples, in order."""
    return _sample_workspace(tmp_path_factory.mktemp("examples"))


def _services(ws: Path):  # type: ignore[no-untyped-def]
    from outreach.app import build
    from outreach.config import load_settings

    return build(load_settings(ws, env={"OUTREACH_DATABASE_URL": "", "OUTREACH_SMTP_URL": ""}))


def _post_in_flight(services) -> bool:  # type: ignore[no-untyped-def]
    """The next post of the sample plan's launch thread is taken for posting, and its
    sender dies there (it stays ``sending``: only the next sender's ``recover`` can
    find out that X may or may not have it). The thread is fired first if its job has
    not run yet. Whether there was a post to take."""
    from outreach.scheduling import fire

    for step in services.outbox.steps("cop-2014"):
        if step.channel == "x" and step.status in ("scheduled", "held"):
            fire(services, step.campaign, step.key, step.send_at)
    return services.posts.claim(channels=["x"]) is not None


def _uncertain_delivery(ws: Path) -> int:
    """A delivery that ``deliveries show / mark-sent / retry`` can act on: one left
    uncertain or failed (``run`` leaves one, see ``_prepared``), or else the next post
    of the launch thread made uncertain the way it happens for real."""
    from sqlalchemy import select

    from outreach.db.models import deliveries

    services = _services(ws)
    try:

        def decidable() -> int | None:
            with services.engine.connect() as conn:
                return conn.execute(
                    select(deliveries.c.id)
                    .where(deliveries.c.status.in_(("uncertain", "failed")))
                    .order_by(deliveries.c.id)
                ).scalar()

        if decidable() is None:
            assert _post_in_flight(services), "no post of the launch thread is left to use"
            services.outbox.recover()
        found = decidable()
        assert found is not None, "a post in flight at a crash did not become uncertain"
        return found
    finally:
        services.close()


def _prepared(
    example: Example, ws: Workspace, request: pytest.FixtureRequest
) -> tuple[list[str], dict[str, str]]:
    """The words and environment the example runs with in this test."""
    args = _adjusted(_shell_words(example.args, ws.home))
    env = dict(example.env)
    if env.get("OUTREACH_DATABASE_URL", "").startswith("postgresql"):
        # a database of its own on the test session's PostgreSQL server
        env["OUTREACH_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    if example.command == "run":
        # what 'run' is for after a crash: a post of the launch thread was in flight
        # when the last sender died; this run finds it and leaves it to a person
        services = _services(ws.path)
        try:
            _post_in_flight(services)
        finally:
            services.close()
    if example.command.startswith("deliveries "):
        # The published id (42) stands for the one 'outreach log' shows: here it is the
        # id of a delivery in the state the command is for (an uncertain X post).
        position = args.index(example.command.split()[1]) + 1
        args[position] = str(_uncertain_delivery(ws.path))
    return args, env


def _run(example: Example, ws: Workspace, request: pytest.FixtureRequest) -> str | None:
    """Run one example in the workspace; what went wrong, if it did not work."""
    ws.done.add(example)
    args, env = _prepared(example, ws, request)
    try:  # a question (send, delete, cancel without --yes) is answered yes
        Cli(ws.path, env=env)(*args, input="y\n")
    except AssertionError as exc:
        return (
            f"{example.text}\n(published in {', '.join(example.sources)}; "
            f"run as: outreach {shlex.join(args)})\n{exc}"
        )
    return None


# The examples that make no state for the ones after them, and take long: when a
# test is run alone (pytest -k), the ones before it that it may need run first.
OWN_STATE = ("rehearse", "demo")
# Each in a workspace of its own: an erased address never comes back, and every
# erasing example should have someone to erase.
ALONE = ("contacts delete",)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.text for e in EXAMPLES])
def test_example_works(
    example: Example,
    shared: Workspace,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    ws = _sample_workspace(tmp_path) if example.command in ALONE else shared
    monkeypatch.chdir(ws.path)  # the examples are written for a shell in the workspace
    if ws is shared:
        for before in EXAMPLES[: EXAMPLES.index(example)]:
            if before not in shared.done and before.command not in OWN_STATE + ALONE:
                _run(before, shared, request)  # whether it works is its own test's to say
    failure = _run(example, ws, request)
    if failure:
        pytest.fail(failure, pytrace=False)
    if "--open" in example.args:
        assert opened, "--open opened nothing"


def test_every_command_shows_an_example() -> None:
    missing = [
        f"outreach {path}" for path, command in command_tree()
        if not _is_group(command) and not help_examples(command)
    ]  # fmt: skip
    assert not missing, f"no 'Example: outreach ...' line in the help of: {', '.join(missing)}"


def test_the_examples_are_found() -> None:
    texts = {e.text for e in EXAMPLES if any(s.startswith("README") for s in e.sources)}
    assert len(texts) >= 30, texts
    # three on one line; the comment's own continuation lines are no examples
    assert {
        "outreach pause cop-2014",
        "outreach resume cop-2014",
        "outreach cancel cop-2014",
    } <= texts
    assert not [t for t in texts if "#" in t or " / " in t or "--rehearsal log" in t]
    leaves = {path for path, command in command_tree() if not _is_group(command)}
    assert leaves <= {e.command for e in EXAMPLES}
