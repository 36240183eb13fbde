"""Settings: one frozen object, loaded once from ``outreach.toml`` and the environment,
and passed explicitly. Secrets come from the environment only."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from outreach.domain.errors import ConfigError
from outreach.domain.urls import has_password, mask_url

SETTINGS_FILE = "outreach.toml"
STATE_DIR = ".outreach"
# A folder is a workspace when it has its settings file or one of these folders (the
# sample in the repository has no settings file; a folder of contacts/ alone keeps a
# contact store). State (.outreach/) does not count: it is what a workspace makes.
WORKSPACE_FOLDERS = ("contacts", "templates", "schedules")

# setting -> (environment variable, key in outreach.toml, secret?)
_SOURCES = {
    "database_url": ("OUTREACH_DATABASE_URL", "database_url", True),
    "smtp_url": ("OUTREACH_SMTP_URL", "smtp.url", True),
    "sender": ("OUTREACH_FROM", "email.from", False),
    "reply_to": ("OUTREACH_REPLY_TO", "email.reply_to", False),
    "rate_per_second": ("OUTREACH_RATE_PER_SECOND", "email.rate_per_second", False),
    "rate_per_hour": ("OUTREACH_RATE_PER_HOUR", "email.rate_per_hour", False),
    "public_url": ("OUTREACH_PUBLIC_URL", "web.public_url", False),
    "secret_key": ("OUTREACH_SECRET_KEY", "web.secret_key", True),
    "newsroom_dir": ("OUTREACH_NEWSROOM_DIR", "press.dir", False),
    "newsroom_url": ("OUTREACH_NEWSROOM_URL", "press.url", False),
    "four_eyes": ("OUTREACH_FOUR_EYES", "approval.four_eyes", False),
    "session_lifetime": ("OUTREACH_SESSION_LIFETIME", "web.session_lifetime", False),
    "login_attempts": ("OUTREACH_LOGIN_ATTEMPTS", "web.login_attempts", False),
    # mail that comes back (outreach.bounces)
    "return_path": ("OUTREACH_RETURN_PATH", "email.return_path", False),
    "verp": ("OUTREACH_VERP", "email.verp", False),
    "bounce_imap_url": ("OUTREACH_BOUNCE_IMAP_URL", "bounces.imap_url", False),
    "bounce_imap_password": ("OUTREACH_BOUNCE_IMAP_PASSWORD", "bounces.imap_password", True),
    "bounce_processed_folder": ("OUTREACH_BOUNCE_PROCESSED_FOLDER", "bounces.processed_folder", False),
    "bounce_fetch_minutes": ("OUTREACH_BOUNCE_FETCH_MINUTES", "bounces.fetch_minutes", False),
    "soft_limit": ("OUTREACH_BOUNCE_SOFT_LIMIT", "bounces.soft_limit", False),
    "soft_days": ("OUTREACH_BOUNCE_SOFT_DAYS", "bounces.soft_days", False),
    "match_days": ("OUTREACH_BOUNCE_MATCH_DAYS", "bounces.match_days", False),
}
# secrets that are no URL: never in a file, shown as *** when set
_PLAIN_SECRETS = {"secret_key", "bounce_imap_password"}
# X credentials: environment only (see channels.x.ENV); kept out of every display
X_ENV_PREFIX = "OUTREACH_X_"
_FILE_KEYS = {key for _env, key, _secret in _SOURCES.values()}


@dataclass(frozen=True)
class Settings:
    workspace: Path
    database_url: str
    smtp_url: str | None = None
    sender: str | None = None
    reply_to: str | None = None
    rate_per_second: float = 50.0
    rate_per_hour: int = 100_000
    public_url: str = "http://127.0.0.1:8000"  # where unsubscribe and view-online links point
    secret_key: str | None = None  # signs those links; see links.secret_key
    newsroom_dir: str | None = None  # where press releases are published (default .outreach/newsroom)
    newsroom_url: str | None = None  # where the newsroom is served (default public_url/newsroom/)
    four_eyes: bool = False  # who scheduled a campaign may not approve it
    session_lifetime: float = 8 * 3600.0  # seconds a staff sign-in lasts ("8h", "30m" in files)
    login_attempts: int = 5  # failed sign-ins allowed per address (and per name) in 15 minutes
    # mail that comes back: the envelope sender (MAIL FROM) of campaign email, per
    # delivery with VERP (local+ID-TOKEN@domain); default: the From address
    return_path: str | None = None
    verp: bool = False
    bounce_imap_url: str | None = None  # imaps://user@host/INBOX: the bounce mailbox
    bounce_imap_password: str | None = field(default=None, repr=False)  # environment only
    bounce_processed_folder: str = "Processed"  # where handled messages are moved
    bounce_fetch_minutes: float = 5.0  # how often outreach run fetches them
    soft_limit: int = 3  # this many soft bounces (of distinct deliveries)...
    soft_days: int = 15  # ...within this many days count as a hard bounce
    match_days: int = 30  # a bounce matched by address: the latest delivery this far back
    x_env: Mapping[str, str] = field(default_factory=dict, repr=False)  # OUTREACH_X_* variables
    origin: Mapping[str, str] = field(default_factory=dict)  # setting -> where its value came from

    state_path: Path | None = None  # set for a rehearsal: .outreach/rehearsal

    @property
    def state_dir(self) -> Path:
        return self.state_path or self.workspace / STATE_DIR

    def rehearsal(self) -> Settings:
        """The same workspace with the rehearsal's own state: its own SQLite database,
        the local Maildir, X posts to a file, the newsroom in .outreach/rehearsal/, and
        no bounce mailbox (its messages are about real deliveries)."""
        from dataclasses import replace

        state = self.workspace / STATE_DIR / "rehearsal"
        return replace(self, state_path=state, database_url=f"sqlite:///{state / 'outreach.db'}",
                       smtp_url=None, x_env={}, newsroom_dir=None, newsroom_url=None,
                       bounce_imap_url=None, bounce_imap_password=None,
                       origin={**self.origin, "database_url": "the rehearsal"})  # fmt: skip

    @property
    def newsroom(self) -> tuple[Path, str]:
        """The newsroom folder and the address it is served at."""
        folder = Path(self.newsroom_dir) if self.newsroom_dir else self.state_dir / "newsroom"
        if not folder.is_absolute():
            folder = self.workspace / folder
        return folder, self.newsroom_url or self.public_url.rstrip("/") + "/newsroom/"

    def described(self) -> list[tuple[str, str, str]]:
        """(setting, value with secrets redacted, origin) for ``outreach config``."""
        rows = [("workspace", str(self.workspace), self.origin.get("workspace", "default"))]
        for name, (_env, _key, secret) in _SOURCES.items():
            value = getattr(self, name)
            shown = "" if value is None else str(value)
            if secret and value:
                shown = "***" if name in _PLAIN_SECRETS else redact(value)
            rows.append((name, shown, self.origin.get(name, "default")))
        names = sorted(self.x_env)
        rows.append(("x_credentials", ("***  (" + ", ".join(names) + ")") if names else "",
                     "env" if names else "not set: X posts go to a local file"))  # fmt: skip
        return rows


def workspace_markers(folder: Path) -> list[str]:
    """What makes ``folder`` a workspace, as names ("outreach.toml", "contacts/"...);
    empty when it is none (or does not exist)."""
    found = [SETTINGS_FILE] if (folder / SETTINGS_FILE).is_file() else []
    return found + [f"{name}/" for name in WORKSPACE_FOLDERS if (folder / name).is_dir()]


def redact(url: str) -> str:
    """A URL with its password replaced by ***, whatever characters the password holds
    (``outreach.domain.urls``: the credentials end at the URL's last ``@``)."""
    return mask_url(url)


def _flatten(table: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_settings(workspace: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    origin: dict[str, str] = {}
    if workspace is not None:
        origin["workspace"] = "--workspace"
    elif env.get("OUTREACH_WORKSPACE"):
        workspace = Path(env["OUTREACH_WORKSPACE"])
        origin["workspace"] = "env OUTREACH_WORKSPACE"
    else:
        workspace = Path.cwd()
        origin["workspace"] = "current folder"
    workspace = workspace.resolve()

    file_values: dict[str, object] = {}
    path = workspace / SETTINGS_FILE
    if path.is_file():
        try:
            file_values = _flatten(tomllib.loads(path.read_text("utf-8")))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax at that line") from None
        in_file = [key for key in file_values if key.startswith("x.")]
        if in_file:
            raise ConfigError(
                f"{path}: {', '.join(sorted(in_file))}: X credentials never go in files",
                hint="set OUTREACH_X_API_KEY, OUTREACH_X_API_SECRET, OUTREACH_X_ACCESS_TOKEN and "
                "OUTREACH_X_ACCESS_SECRET (or OUTREACH_X_USER_TOKEN) in the environment",
            )
        unknown = sorted(set(file_values) - _FILE_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown setting(s) {', '.join(unknown)}",
                hint=f"known settings: {', '.join(sorted(_FILE_KEYS))}",
            )

    values: dict[str, object] = {}
    for name, (env_name, key, secret) in _SOURCES.items():
        if env.get(env_name):
            values[name] = env[env_name]
            origin[name] = f"env {env_name}"
        elif key in file_values:
            value = file_values[key]
            if name in _PLAIN_SECRETS or (secret and isinstance(value, str) and has_password(value)):
                raise ConfigError(
                    f"{path}: {key} holds a secret",
                    hint=f"secrets never go in files; set {env_name} in the environment instead",
                )
            values[name] = value
            origin[name] = f"{SETTINGS_FILE} {key}"

    db_url = str(values.pop("database_url", "") or "")
    if not db_url:
        db_url = f"sqlite:///{workspace / STATE_DIR / 'outreach.db'}"
        origin.setdefault("database_url", "default")
    elif db_url.startswith("sqlite:///") and not db_url.startswith("sqlite:////"):
        relative = db_url.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            db_url = f"sqlite:///{workspace / relative}"
    try:
        if "rate_per_second" in values:
            values["rate_per_second"] = float(values["rate_per_second"])  # type: ignore[arg-type]
        if "rate_per_hour" in values:
            values["rate_per_hour"] = int(values["rate_per_hour"])  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"a rate limit is not a number: {exc}") from None
    _web_values(values, origin)
    _bounce_values(values, origin)
    x_env = {k: v for k, v in env.items() if k.startswith(X_ENV_PREFIX) and v}
    return Settings(workspace=workspace, database_url=db_url, origin=origin, x_env=x_env, **values)  # type: ignore[arg-type]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _yes_no(values: dict[str, object], origin: Mapping[str, str], name: str) -> None:
    raw = values[name]
    text = str(raw).strip().lower()
    if not isinstance(raw, bool) and text not in _TRUE | _FALSE:
        raise ConfigError(f"{name} ({origin[name]}) is {raw!r}, not true or false")
    values[name] = raw if isinstance(raw, bool) else text in _TRUE


def _whole(values: dict[str, object], origin: Mapping[str, str], name: str) -> None:
    raw = values[name]
    if isinstance(raw, bool) or not str(raw).strip().isdigit() or int(str(raw)) < 1:
        raise ConfigError(f"{name} ({origin[name]}) is {raw!r}, not a whole number above 0")
    values[name] = int(str(raw))


def _bounce_values(values: dict[str, object], origin: Mapping[str, str]) -> None:
    """The return path (an address), VERP (yes/no), the bounce mailbox's URL (no
    password in it) and the counts and periods of bounce handling."""
    if "verp" in values:
        _yes_no(values, origin, "verp")
    for name in ("soft_limit", "soft_days", "match_days"):
        if name in values:
            _whole(values, origin, name)
    if "bounce_fetch_minutes" in values:
        raw = values["bounce_fetch_minutes"]
        try:
            minutes = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            minutes = 0.0
        if isinstance(raw, bool) or not minutes > 0:
            raise ConfigError(f"bounce_fetch_minutes ({origin['bounce_fetch_minutes']}) is {raw!r}, "
                              "not a number of minutes above 0")  # fmt: skip
        values["bounce_fetch_minutes"] = minutes
    path = values.get("return_path")
    if path is not None:
        text = str(path).strip()
        local, at, domain = text.rpartition("@")
        if not at or not local or "." not in domain or any(c.isspace() or c in "<>,;\"" for c in text):
            raise ConfigError(f"return_path ({origin['return_path']}) is {path!r}, not a bare address",
                              hint="an address of the bounce mailbox, e.g. bounces@example.org")  # fmt: skip
        values["return_path"] = text
    if values.get("verp") and not values.get("return_path"):
        raise ConfigError(f"verp ({origin['verp']}) is on, but no return path is set",
                          hint="set email.return_path in outreach.toml (or OUTREACH_RETURN_PATH) to "
                          "the bounce mailbox's address, e.g. bounces@example.org")  # fmt: skip
    url = values.get("bounce_imap_url")
    if url is not None and has_password(str(url)):
        raise ConfigError(f"bounce_imap_url ({origin['bounce_imap_url']}) holds a password",
                          hint="give the IMAP password in OUTREACH_BOUNCE_IMAP_PASSWORD, never in the URL")  # fmt: skip


def _web_values(values: dict[str, object], origin: Mapping[str, str]) -> None:
    """The web and approval settings as their types: a yes/no, a duration, a count."""
    from outreach.domain.plan import parse_duration

    if "four_eyes" in values:
        _yes_no(values, origin, "four_eyes")
    if "session_lifetime" in values:
        raw = values["session_lifetime"]
        try:
            seconds = (float(raw) if isinstance(raw, int | float) or str(raw).strip().isdigit()
                       else parse_duration(str(raw)).total_seconds())  # fmt: skip
        except ValueError:
            seconds = 0.0
        if seconds <= 0:
            raise ConfigError(f"session_lifetime ({origin['session_lifetime']}) is {raw!r}",
                              hint="a duration like 8h, 30m or 1d, or a number of seconds")  # fmt: skip
        values["session_lifetime"] = seconds
    if "login_attempts" in values:
        _whole(values, origin, "login_attempts")
