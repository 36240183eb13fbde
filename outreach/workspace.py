"""``outreach init``: a new workspace that rehearses as it is: a small plan
(``schedules/my-launch.yaml``), its templates and a dozen invented contacts, copied
from ``workspace_skeleton/`` in this package, and a commented ``outreach.toml``."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from outreach.config import SETTINGS_FILE, workspace_markers
from outreach.domain.errors import OutreachError

SKELETON = "workspace_skeleton"
STARTER_PLAN = "schedules/my-launch.yaml"

SETTINGS_TEMPLATE = """\
# outreach settings for this workspace. Every line is optional.
# Secrets (passwords, API keys) never go here: set them in the environment.

# Where contacts, the outbox and the delivery log live. Default: SQLite in
# .outreach/outreach.db. For PostgreSQL set OUTREACH_DATABASE_URL in the
# environment, e.g. postgresql+psycopg://outreach@db.example.org/outreach
# database_url = "sqlite:///.outreach/outreach.db"

[email]
# from = "Child Online Protection <cop@example.org>"
# reply_to = "press@example.org"
# rate_per_second = 50
# rate_per_hour = 100000
# Where bounces and complaints come back (the envelope sender); with verp = true,
# each delivery goes out from its own signed bounces+TOKEN@ address.
# return_path = "bounces@example.org"
# verp = false

# [smtp]
# The SMTP relay, with its password, comes from OUTREACH_SMTP_URL, e.g.
# smtp://user:password@smtp.example.org:587?starttls=true

[press]
# Where press releases are published (pages, index, Atom feed), and their address.
# dir = ".outreach/newsroom"
# url = "https://www.example.org/newsroom/"

[web]
# Where unsubscribe and view-online links point: the address of 'outreach serve'.
# public_url = "https://outreach.example.org"
# session_lifetime = "8h"

[approval]
# four_eyes = false   # true: whoever scheduled a campaign may not approve it

[bounces]
# The bounce mailbox; its password comes from OUTREACH_BOUNCE_IMAP_PASSWORD only.
# imap_url = "imaps://bounces@mail.example.org/INBOX"
# fetch_minutes = 5
# soft_limit = 3      # soft bounces within soft_days that make a hard one
# soft_days = 15

# X credentials come from the environment only: OUTREACH_X_API_KEY,
# OUTREACH_X_API_SECRET, OUTREACH_X_ACCESS_TOKEN, OUTREACH_X_ACCESS_SECRET (or
# OUTREACH_X_USER_TOKEN). Without them, posts are written to .outreach/x/posts.jsonl.
"""

GITIGNORE = """\
# outreach state (database, outbox, logs) and secrets stay out of git
.outreach/
.env
*.secret
"""

FOLDERS = ("contacts", "templates", "templates/_layouts", "schedules", "media")


def skeleton_files() -> list[tuple[str, Traversable]]:
    """(path inside the workspace, the packaged file) for every file of the starter."""
    found: list[tuple[str, Traversable]] = []

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.startswith((".", "__")):
                continue
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                found.append((prefix + entry.name, entry))

    walk(files("outreach").joinpath(SKELETON), "")
    return found


def init_workspace(target: Path) -> list[Path]:
    """Create the folders, the starter files and the settings; refuses a folder that
    is a workspace already, before writing anything."""
    if (target / SETTINGS_FILE).exists():
        raise OutreachError(
            f"{target} already has an {SETTINGS_FILE}; it is a workspace already",
            hint="choose another folder, or edit the files that are there",
        )
    if target.exists() and not target.is_dir():
        raise OutreachError(f"{target} is a file, not a folder", hint="choose another name")
    in_the_way = [f for f in FOLDERS if (target / f).exists() and not (target / f).is_dir()]
    if in_the_way:
        raise OutreachError(
            f"{target} has a file where init makes a folder: {', '.join(in_the_way)}",
            hint="move it away, or choose a new folder",
        )
    present = workspace_markers(target)
    if present:
        raise OutreachError(
            f"{target} is a workspace already: it has {', '.join(present)}",
            code="workspace_exists", folder=str(target),
        )
    starter = skeleton_files()
    created: list[Path] = []
    for folder in FOLDERS:
        path = target / folder
        if not path.exists():
            path.mkdir(parents=True)
            created.append(path)
    for rel, source in starter:
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())
        created.append(path)
    for name, text in ((SETTINGS_FILE, SETTINGS_TEMPLATE), (".gitignore", GITIGNORE)):
        path = target / name
        if path.exists():
            with path.open("a", encoding="utf-8") as handle:
                handle.write("\n" + text)
        else:
            path.write_text(text, encoding="utf-8")
        created.append(path)
    return created
