"""The X channel: posts through tweepy's ``Client.create_tweet`` (API v2), images
through X's v2 media upload endpoint with the same credentials; and ``XFile``, the
stand-in without credentials that writes exactly what would be posted to a file.

Credentials come from the environment only (``XCredentials.from_env``), and never
reach a log: tweepy logs request headers at DEBUG, so its logger gets a filter that
masks every secret. tweepy and requests are imported when an ``XApi`` is made: a
sender with no X step to post does not pay for them at start-up.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outreach.confined import outside, refusal
from outreach.domain.errors import ConfigError
from outreach.ports import PostItem, PostResult

if TYPE_CHECKING:
    import requests
    import tweepy

MEDIA_UPLOAD = "https://api.x.com/2/media/upload"
MEDIA_METADATA = "https://api.x.com/2/media/metadata"
ENV = {
    "api_key": "OUTREACH_X_API_KEY",
    "api_secret": "OUTREACH_X_API_SECRET",
    "access_token": "OUTREACH_X_ACCESS_TOKEN",
    "access_secret": "OUTREACH_X_ACCESS_SECRET",
    "user_token": "OUTREACH_X_USER_TOKEN",
}
CREDENTIALS_HINT = (
    "set OUTREACH_X_API_KEY, OUTREACH_X_API_SECRET, OUTREACH_X_ACCESS_TOKEN and "
    "OUTREACH_X_ACCESS_SECRET (OAuth 1.0a user context, with read and write permission), "
    "or OUTREACH_X_USER_TOKEN (an OAuth 2.0 user token with tweet.write)"
)


@dataclass(frozen=True, repr=False)
class XCredentials:
    api_key: str | None = None
    api_secret: str | None = None
    access_token: str | None = None
    access_secret: str | None = None
    user_token: str | None = None

    def __repr__(self) -> str:  # never shows a secret, even in a traceback
        return f"XCredentials({'OAuth 2.0 user token' if self.user_token else 'OAuth 1.0a'})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> XCredentials | None:
        """The credentials in the environment, None if there are none, an error
        naming the missing variables if only some are set."""
        env = os.environ if env is None else env
        values = {field: env.get(name) or None for field, name in ENV.items()}
        if values["user_token"]:
            return cls(user_token=values["user_token"])
        oauth1 = {k: v for k, v in values.items() if k != "user_token"}
        if not any(oauth1.values()):
            return None
        missing = [ENV[k] for k, v in oauth1.items() if not v]
        if missing:
            raise ConfigError(
                f"X credentials are incomplete: {', '.join(missing)} not set", hint=CREDENTIALS_HINT
            )
        return cls(**oauth1)

    def secrets(self) -> list[str]:
        return [v for v in (self.api_key, self.api_secret, self.access_token,
                            self.access_secret, self.user_token) if v]  # fmt: skip


class _MaskSecrets(logging.Filter):
    """Masks every secret any X channel of this process was given."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secrets: Sequence[str]) -> None:
        self.secrets.update(s for s in secrets if len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "***")
            record.msg, record.args = message, None
        return True


_MASK = _MaskSecrets()


class _XTarget(ABC):
    """``ports.PostTarget`` for X: an item is a post of a thread (its text, images,
    and the post it replies to)."""

    service = "X"
    name: str

    @abstractmethod
    def post(self, text: str, *, reply_to: str | None, images: Sequence[tuple[str, str]] = ()) -> PostResult: ...

    def facts(self, item: PostItem) -> dict[str, Any]:
        return {"text": item.content["text"], "in_reply_to": item.reply_to}

    def deliver(self, item: PostItem, at: datetime) -> PostResult:
        images = [(path, alt) for path, alt in item.content.get("images", [])]
        return self.post(item.content["text"], reply_to=item.reply_to, images=images)


class XApi(_XTarget):
    """Posts through the X API v2."""

    def __init__(self, credentials: XCredentials, media_dir: Path, *, timeout: float = 30.0) -> None:
        import tweepy

        self.credentials = credentials
        self.media_dir = media_dir
        self.timeout = timeout
        self.name = "the X API"
        self.user_auth = credentials.user_token is None
        self.client = tweepy.Client(
            bearer_token=credentials.user_token,
            consumer_key=credentials.api_key, consumer_secret=credentials.api_secret,
            access_token=credentials.access_token, access_token_secret=credentials.access_secret,
        )  # fmt: skip
        _MASK.add(credentials.secrets())
        for name in ("tweepy.client", "requests_oauthlib.oauth1_auth", "oauthlib.oauth1.rfc5849"):
            log = logging.getLogger(name)
            if _MASK not in log.filters:
                log.addFilter(_MASK)

    def post(self, text: str, *, reply_to: str | None, images: Sequence[tuple[str, str]] = ()) -> PostResult:
        import requests
        import tweepy

        started = time.monotonic()
        try:
            media_ids = [self._upload(path, alt) for path, alt in images]
            response = self.client.create_tweet(
                text=text, in_reply_to_tweet_id=reply_to, media_ids=media_ids or None,
                user_auth=self.user_auth,
            )  # fmt: skip
            post_id = str(response.data["id"])
            return PostResult(True, post_id, code=201, text="created",
                              duration_ms=_ms(started), url=f"https://x.com/i/status/{post_id}")  # fmt: skip
        except tweepy.HTTPException as exc:
            return _classify(exc, _ms(started))
        except requests.RequestException as exc:
            # no answer: X may or may not have the post; a retry that finds it there
            # gets 403 duplicate, which is logged uncertain, never posted twice
            return PostResult(False, kind="retry", text=f"connection: {type(exc).__name__}",
                              duration_ms=_ms(started))  # fmt: skip

    def _upload(self, path: str, alt: str) -> str:
        import tweepy

        file = self.media_dir / path
        found = outside(file, self.media_dir.parent)  # the workspace
        if found is not None:
            raise tweepy.BadRequest(_fake_response(400, refusal(*found)))
        if not file.is_file():
            raise tweepy.BadRequest(_fake_response(400, f"image {path} is not in {self.media_dir}"))
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        category = "tweet_gif" if kind == "image/gif" else "tweet_image"
        answer = self._request(MEDIA_UPLOAD, files={"media": (file.name, file.read_bytes(), kind)},
                               data={"media_category": category})  # fmt: skip
        media_id = str(answer["data"]["id"])
        if alt:
            self._request(MEDIA_METADATA, json={"id": media_id, "metadata": {"alt_text": {"text": alt[:1000]}}})
        return media_id

    def _request(self, url: str, **kwargs) -> dict:  # type: ignore[no-untyped-def]
        """A request to a v2 endpoint tweepy has no method for, with the client's
        own session and authentication, its errors raised as tweepy's."""
        import tweepy

        headers = {"User-Agent": self.client.user_agent}
        auth = None
        if self.user_auth:
            auth = tweepy.OAuth1UserHandler(
                self.credentials.api_key, self.credentials.api_secret,
                self.credentials.access_token, self.credentials.access_secret,
            ).apply_auth()  # fmt: skip
        else:
            headers["Authorization"] = f"Bearer {self.credentials.user_token}"
        response = self.client.session.post(url, headers=headers, auth=auth, timeout=self.timeout, **kwargs)
        if response.status_code >= 300:
            raise _exception(response)
        return response.json()


def _exception(response: requests.Response) -> tweepy.HTTPException:
    import tweepy

    if response.status_code == 429:
        reset = response.headers.get("x-rate-limit-reset")
        return tweepy.TooManyRequests(response, reset_time=int(reset) if reset else None)  # type: ignore[call-arg]
    if response.status_code >= 500:
        return tweepy.TwitterServerError(response)
    known = {400: tweepy.BadRequest, 401: tweepy.Unauthorized, 403: tweepy.Forbidden, 404: tweepy.NotFound}
    return known.get(response.status_code, tweepy.HTTPException)(response)


def _fake_response(status: int, message: str) -> requests.Response:
    import requests

    response = requests.Response()
    response.status_code = status
    response.reason = message
    response._content = json.dumps({"detail": message}).encode()
    return response


def _classify(exc: tweepy.HTTPException, duration_ms: float) -> PostResult:
    import tweepy

    status = exc.response.status_code
    said = "; ".join(str(m) for m in exc.api_messages) or str(exc)
    if isinstance(exc, tweepy.TooManyRequests):
        reset = exc.response.headers.get("x-rate-limit-reset")
        retry_at = datetime.fromtimestamp(int(reset), UTC) if reset else None
        return PostResult(False, kind="rate_limited", code=429, retry_at=retry_at,
                          text=f"rate limit reached: {said}", duration_ms=duration_ms)  # fmt: skip
    if status == 403 and "duplicate" in said.lower():
        return PostResult(False, kind="duplicate", code=403, text=said, duration_ms=duration_ms)
    if status in (401, 403):
        return PostResult(False, kind="auth", code=status, duration_ms=duration_ms,
                          text=f"X refused the credentials ({status}: {said}); {CREDENTIALS_HINT}")  # fmt: skip
    if status >= 500:
        return PostResult(False, kind="retry", code=status, text=said, duration_ms=duration_ms)
    return PostResult(False, kind="rejected", code=status, text=said, duration_ms=duration_ms)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class XFile(_XTarget):
    """The stand-in without credentials: each post is a JSON line in ``path`` with
    its text, the post it replies to and its images, and gets a local id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"the file {path} (no X credentials set)"

    def post(self, text: str, *, reply_to: str | None, images: Sequence[tuple[str, str]] = ()) -> PostResult:
        started = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            handle.seek(0)
            post_id = f"local-{sum(1 for _ in handle) + 1}"
            record = {"id": post_id, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                      "in_reply_to": reply_to, "text": text,
                      "images": [{"path": p, "alt": a} for p, a in images]}  # fmt: skip
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return PostResult(True, post_id, code=200, text=f"written to {self.path.name}",
                          duration_ms=_ms(started))  # fmt: skip
