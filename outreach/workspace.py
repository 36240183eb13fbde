"""``outreach init``: a new, empty workspace."""

from __future__ import annotations

from pathlib import Path

from outreach.domain.errors import OutreachError

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

# [smtp]
# The SMTP relay, with its password, comes from OUTREACH_SMTP_URL, e.g.
# smtp://user:password@smtp.example.org:587?starttls=true

[press]
# Where press releases are published (pages, index, Atom feed), and their address.
# dir = ".outreach/newsroom"
# url = "https://www.example.org/newsroom/"

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


def init_workspace(target: Path) -> list[Path]:
    """Create folders and files; refuses to touch an existing workspace."""
    if (target / "outreach.toml").exists():
        raise OutreachError(
            f"{target} already has an outreach.toml; it is a workspace already",
            hint="choose another folder, or edit the files that are there",
        )
    created: list[Path] = []
    for folder in FOLDERS:
        path = target / folder
        if not path.exists():
            path.mkdir(parents=True)
            created.append(path)
    for name, text in (("outreach.toml", SETTINGS_TEMPLATE), (".gitignore", GITIGNORE)):
        path = target / name
        if path.exists():
            with path.open("a", encoding="utf-8") as handle:
                handle.write("\n" + text)
        else:
            path.write_text(text, encoding="utf-8")
        created.append(path)
    return created
