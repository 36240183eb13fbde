"""The X channel through tweepy's real code path, with X's HTTP answers recorded at the
requests layer (``responses``): the exact requests X would receive, and every error."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
from responses import matchers

from outreach.app import Services, build
from outreach.config import load_settings
from outreach.imports import import_files
from outreach.scheduling import fire, plan_hash, schedule
from tests.conftest import ROOT, Cli

TWEETS = "https://api.twitter.com/2/tweets"
UPLOAD = "https://api.x.com/2/media/upload"
METADATA = "https://api.x.com/2/media/metadata"
THREAD = "launch-thread@20140905T0705Z"
LAUNCH = datetime(2014, 9, 5, 7, 5, tzinfo=UTC)
OAUTH1 = {"OUTREACH_X_API_KEY": "ck-PUBLICKEY", "OUTREACH_X_API_SECRET": "cs-SECRET-111",
          "OUTREACH_X_ACCESS_TOKEN": "at-TOKEN-222", "OUTREACH_X_ACCESS_SECRET": "as-SECRET-333"}  # fmt: skip


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    return ws


def _services(ws: Path, x_env: dict[str, str], clock=None) -> Services:  # type: ignore[no-untyped-def]
    env = {"OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "k", **x_env}
    services = build(load_settings(ws, env=env), *([clock] if clock else []))
    return services


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def launch(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The sample workspace with X credentials, scheduled and approved, its thread fired."""
    ws = _workspace(tmp_path)
    clock = Clock(LAUNCH)
    services = _services(ws, OAUTH1, clock)
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    fire_thread(services)
    yield services
    services.close()


def fire_thread(services: Services) -> None:
    plan = services.settings.workspace / "schedules/cop-guidelines-2014.yaml"
    schedule(services, plan)
    from outreach.plans import load

    services.outbox.approve("cop-2014", "Tester", plan_hash(services.settings.workspace, plan, load(plan)))
    assert fire(services, "cop-2014", THREAD, LAUNCH) == "active"


def created(post_id: str, text: str = "") -> dict:
    return {"data": {"id": post_id, "text": text, "edit_history_tweet_ids": [post_id]}}


def thread_state(services: Services) -> list[tuple[int, str, str | None]]:
    step = services.outbox.step_by_key("cop-2014", THREAD)
    from sqlalchemy import select

    from outreach.db.models import deliveries

    with services.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(deliveries.c.part, deliveries.c.status, deliveries.c.message_id)
            .where(deliveries.c.step_id == step.id).order_by(deliveries.c.part))]  # fmt: skip


@responses.activate
def test_a_thread_is_posted_each_post_replying_to_the_one_before(launch: Services) -> None:
    for post_id in ("1001", "1002", "1003"):
        responses.post(TWEETS, json=created(post_id), status=201)
    poster = launch.poster()
    assert poster.run_due() == 3
    bodies = [json.loads(call.request.body) for call in responses.calls]
    assert [b.get("reply") for b in bodies] == [
        None, {"in_reply_to_tweet_id": "1001"}, {"in_reply_to_tweet_id": "1002"},
    ]  # fmt: skip
    assert bodies[0]["text"].startswith("Today in Istanbul, ITU and UNICEF release the Guidelines")
    assert "https://www.example.org/cop/guidelines-2014" in bodies[0]["text"]
    assert set(bodies[0]) == {"text"}  # nothing else is sent: no media, no poll
    for call in responses.calls:
        auth = call.request.headers["Authorization"]
        assert auth.startswith("OAuth ") and 'oauth_consumer_key="ck-PUBLICKEY"' in auth
        assert 'oauth_token="at-TOKEN-222"' in auth
        assert "SECRET" not in auth  # secrets sign the request; they are never sent
    assert thread_state(launch) == [(0, "sent", "1001"), (1, "sent", "1002"), (2, "sent", "1003")]
    sent = launch.outbox.events(step_key=THREAD, event="sent")
    assert [e["detail"]["post_id"] for e in sent] == ["1001", "1002", "1003"]
    assert sent[1]["detail"]["in_reply_to"] == "1001"
    assert poster.run_due() == 0 and len(responses.calls) == 3


@responses.activate
def test_an_oauth2_user_token_is_used_as_a_bearer_and_never_logged(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    ws = _workspace(tmp_path)
    services = _services(ws, {"OUTREACH_X_USER_TOKEN": "u2-VERY-SECRET-TOKEN"}, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    fire_thread(services)
    for post_id in ("1", "2", "3"):
        responses.post(TWEETS, json=created(post_id), status=201)
    with caplog.at_level(logging.DEBUG):
        assert services.poster().run_due() == 3
    assert responses.calls[0].request.headers["Authorization"] == "Bearer u2-VERY-SECRET-TOKEN"
    assert "Making API request" in caplog.text  # tweepy did log the request headers...
    assert "u2-VERY-SECRET-TOKEN" not in caplog.text  # ...with the token masked
    services.close()
    assert b"u2-VERY-SECRET-TOKEN" not in (ws / ".outreach" / "outreach.db").read_bytes()


@responses.activate
def test_images_are_uploaded_to_the_v2_media_endpoint_and_attached(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (ws / "media").mkdir()
    (ws / "media" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (ws / "templates" / "cop-launch.x.j2").write_text(
        'The Guidelines are out. {{ campaign.links.guidelines }}\nimage: cover.png "The cover of the Guidelines"\n'
        "---\nFive key areas for companies.\n"
    )  # fmt: skip
    services = _services(ws, OAUTH1, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    fire_thread(services)
    responses.post(UPLOAD, json={"data": {"id": "777", "media_key": "3_777"}}, status=200)
    responses.post(METADATA, status=200, json={"data": {"associated_metadata": True}},
                   match=[matchers.json_params_matcher(
                       {"id": "777", "metadata": {"alt_text": {"text": "The cover of the Guidelines"}}})])  # fmt: skip
    responses.post(TWEETS, json=created("2001"), status=201)
    responses.post(TWEETS, json=created("2002"), status=201)
    assert services.poster().run_due() == 2
    upload = responses.calls[0].request
    assert upload.url == UPLOAD and upload.headers["Authorization"].startswith("OAuth ")
    assert b'name="media_category"\r\n\r\ntweet_image' in upload.body
    assert b"\x89PNG\r\n\x1a\nfake" in upload.body
    first, second = (json.loads(c.request.body) for c in responses.calls if c.request.url == TWEETS)
    assert first == {"text": "The Guidelines are out. https://www.example.org/cop/guidelines-2014",
                     "media": {"media_ids": ["777"]}}  # fmt: skip
    assert second == {"text": "Five key areas for companies.", "reply": {"in_reply_to_tweet_id": "2001"}}
    services.close()


@responses.activate
def test_429_waits_for_the_reset_time_without_a_busy_loop(launch: Services) -> None:
    reset = LAUNCH + timedelta(minutes=12)
    responses.post(TWEETS, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
                   headers={"x-rate-limit-reset": str(int(reset.timestamp()))})  # fmt: skip
    poster = launch.poster()
    assert poster.run_due() == 1
    assert poster.run_due() == 0  # blocked until the reset: nothing is tried
    assert len(responses.calls) == 1
    assert thread_state(launch)[0][1] == "deferred"
    deferred = launch.outbox.events(step_key=THREAD, event="deferred")[0]["detail"]
    assert "waits until 2014-09-05 07:17:00 UTC" in deferred["reason"]
    launch.clock.now = reset + timedelta(seconds=1)  # type: ignore[attr-defined]
    responses.replace(responses.POST, TWEETS, json=created("1"), status=201)
    responses.add(responses.POST, TWEETS, json=created("2"), status=201)
    responses.add(responses.POST, TWEETS, json=created("3"), status=201)
    assert poster.run_due() == 3
    assert [s for _p, s, _i in thread_state(launch)] == ["sent"] * 3


@responses.activate
def test_server_errors_and_dropped_connections_are_retried_with_backoff(launch: Services) -> None:
    from requests.exceptions import ConnectionError as Dropped

    responses.post(TWEETS, status=503, json={"title": "Service Unavailable", "detail": "over capacity"})
    responses.post(TWEETS, body=Dropped("connection reset by peer"))
    responses.post(TWEETS, json=created("1"), status=201)
    poster = launch.poster()
    assert poster.run_due() == 1
    state = thread_state(launch)[0]
    assert state[1] == "deferred"
    for _ in range(2):
        launch.clock.now += timedelta(hours=3)  # type: ignore[attr-defined]  # past any backoff
        poster.run_due()
    events = [e["event"] for e in launch.outbox.events(step_key=THREAD) if e["detail"].get("part") == 0]
    assert events.count("deferred") == 2 and events.count("sent") == 1
    replies = [e["detail"]["reply"] for e in launch.outbox.events(step_key=THREAD, event="deferred")]
    assert "over capacity" in replies[0] and "connection: ConnectionError" in replies[1]


@responses.activate
def test_duplicate_content_is_uncertain_and_stops_the_thread_until_a_person_decides(launch: Services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    responses.post(TWEETS, json=created("1"), status=201)
    responses.post(TWEETS, status=403, json={
        "detail": "You are not allowed to create a Tweet with duplicate content.",
        "type": "about:blank", "title": "Forbidden", "status": 403})  # fmt: skip
    poster = launch.poster()
    assert poster.run_due() == 2  # post 1 sent, post 2 uncertain, post 3 not tried
    assert thread_state(launch) == [(0, "sent", "1"), (1, "uncertain", None), (2, "queued", None)]
    reason = launch.outbox.events(step_key=THREAD, event="uncertain")[0]["detail"]["reason"]
    assert "probably posted already" in reason and "duplicate content" in reason
    assert poster.run_due() == 0 and len(responses.calls) == 2
    # a person finds the post on the account and records it: the thread goes on from it
    uncertain = launch.outbox.events(step_key=THREAD, event="uncertain")[0]["delivery_id"]
    cli = Cli(launch.settings.workspace, env={"OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "k"})
    bad = cli("deliveries", "mark-sent", str(uncertain), "--post-id", "x.com/abc", ok=False)
    assert "is not an X post id" in bad.stderr
    out = cli("deliveries", "mark-sent", str(uncertain), "--post-id", "1999", "--by", "Ana").stdout
    assert "marked sent as post 1999" in out
    shown = cli("deliveries", "show", str(uncertain)).stdout
    assert "marked sent by Ana" in shown and "uncertain" in shown
    responses.post(TWEETS, json=created("3"), status=201)
    assert poster.run_due() == 1
    assert json.loads(responses.calls[-1].request.body)["reply"] == {"in_reply_to_tweet_id": "1999"}


@responses.activate
def test_refused_credentials_fail_the_step_with_a_message_about_them(launch: Services) -> None:
    responses.post(TWEETS, status=401, json={"title": "Unauthorized", "detail": "Unauthorized", "status": 401})
    poster = launch.poster()
    assert poster.run_due() == 1
    step = launch.outbox.step_by_key("cop-2014", THREAD)
    assert step.status == "failed"
    step_event = [e for e in launch.outbox.events(step_key=THREAD, event="failed") if e["delivery_id"] is None]
    reason = step_event[0]["detail"]["reason"]
    assert "X refused the credentials (401" in reason and "OUTREACH_X_API_KEY" in reason
    assert poster.run_due() == 0 and len(responses.calls) == 1
    every = json.dumps(launch.outbox.events(step_key=THREAD, limit=1000), default=str)
    assert not any(secret in every for secret in OAUTH1.values())


@responses.activate
def test_a_post_x_rejects_fails_alone(launch: Services) -> None:
    responses.post(TWEETS, status=400, json={"errors": [{"message": "Invalid reply id"}], "title": "Invalid Request"})
    assert launch.poster().run_due() == 1
    assert thread_state(launch)[0][1] == "failed"
    assert launch.outbox.step_by_key("cop-2014", THREAD).status == "active"


@responses.activate
def test_a_post_in_flight_at_a_crash_is_never_posted_again_blindly(launch: Services) -> None:
    item = launch.posts.claim(channels=["x"], now=LAUNCH)  # sending, then the process dies
    assert item is not None and item.part == 0
    assert launch.outbox.recover() == 1
    assert thread_state(launch)[0][1] == "uncertain"
    assert launch.poster().run_due() == 0 and len(responses.calls) == 0
    detail = launch.outbox.events(step_key=THREAD, event="uncertain")[0]["detail"]
    assert "a person must decide" in detail["reason"] and detail["decide"] == "retry or mark-sent"
    # the log stores the fact; the CLI names the commands (a web page links them)
    shown = Cli(launch.settings.workspace, env={"OUTREACH_SECRET_KEY": "k"})("log", "--event", "uncertain").stdout
    assert f"outreach deliveries retry {item.delivery_id}" in " ".join(shown.split())
    launch.posts.retry(item.delivery_id, "Ana")
    for post_id in ("1", "2", "3"):
        responses.post(TWEETS, json=created(post_id), status=201)
    assert launch.poster().run_due() == 3


def test_a_post_too_long_for_x_fails_its_step_before_any_call(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (ws / "templates" / "cop-launch.x.j2").write_text("Launch! " + "x" * 300 + "\n")
    services = _services(ws, OAUTH1, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    plan = ws / "schedules/cop-guidelines-2014.yaml"
    schedule(services, plan)
    from outreach.plans import load

    services.outbox.approve("cop-2014", "T", plan_hash(ws, plan, load(plan)))
    with responses.RequestsMock() as mock:  # any HTTP call would fail the test
        assert fire(services, "cop-2014", THREAD, LAUNCH) == "failed"
        assert services.poster().run_due() == 0
        assert not mock.calls
    reason = services.outbox.events(step_key=THREAD, event="failed")[0]["detail"]["reason"]
    assert "post 1 of 1 is 308 long as X counts it; at most 280" in reason
    services.close()


def test_without_credentials_posts_go_to_a_file_that_shows_them(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    services = _services(ws, {}, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    fire_thread(services)
    assert services.poster().run_due() == 3
    lines = [json.loads(line) for line in (ws / ".outreach/x/posts.jsonl").read_text().splitlines()]
    assert [p["id"] for p in lines] == ["local-1", "local-2", "local-3"]
    assert [p["in_reply_to"] for p in lines] == [None, "local-1", "local-2"]
    services.close()


def test_incomplete_credentials_are_a_clear_error(tmp_path: Path) -> None:
    from outreach.domain.errors import ConfigError

    services = _services(_workspace(tmp_path), {"OUTREACH_X_API_KEY": "k"})
    with pytest.raises(ConfigError, match="OUTREACH_X_API_SECRET, OUTREACH_X_ACCESS_TOKEN"):
        services.x_channel()
    services.close()
    toml = tmp_path / "ws" / "outreach.toml"
    toml.write_text('[x]\napi_key = "k"\n')
    with pytest.raises(ConfigError, match="X credentials never go in files"):
        load_settings(tmp_path / "ws", env={})


def test_config_shows_that_x_credentials_are_set_never_what_they_are(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    out = Cli(ws, env=OAUTH1)("config").stdout
    assert "x_credentials" in out and "OUTREACH_X_API_KEY" in out
    assert not any(secret in out for secret in OAUTH1.values())
    assert "not set: X posts go to a local file" in Cli(ws)("config").stdout


def test_a_sender_with_half_the_x_credentials_stops_before_sending(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    ws = _workspace(tmp_path)
    exe = str(Path(sys.executable).with_name("outreach"))
    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "k",
           "OUTREACH_SMTP_URL": "smtp://127.0.0.1:9", "OUTREACH_X_API_KEY": "ck-only"}  # fmt: skip
    result = subprocess.run([exe, "-w", str(ws), "run", "--workers", "2"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "X credentials are incomplete: OUTREACH_X_API_SECRET" in result.stderr
    assert "ck-only" not in result.stderr + result.stdout


def test_a_thread_in_the_outbox_on_every_backend(tmp_path: Path, database_url: str) -> None:
    """Posts materialise once, in order; each is claimed only after the one before it
    is sent, with that post's id to reply to (SQLite and PostgreSQL alike)."""
    from outreach.ports import Outcome

    ws = _workspace(tmp_path)
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": database_url, "OUTREACH_SECRET_KEY": "k"}))
    step = services.outbox.ensure_step(campaign="c", key="thread", channel="x", template="cop-launch",
                                       audience="", send_at=LAUNCH)  # fmt: skip
    items = [{"text": f"post {i}", "images": []} for i in range(3)]
    assert services.posts.materialize(step, items) == 3
    assert services.posts.materialize(step, items) == 0  # again: nothing new
    first = services.posts.claim(channels=["x"], now=LAUNCH)
    assert first is not None and (first.part, first.parts, first.reply_to) == (0, 3, None)
    assert services.posts.claim(channels=["x"], now=LAUNCH) is None  # post 1 waits for post 0
    services.outbox.record([Outcome(first.delivery_id, step.id, None, "sent", "sent", {}, message_id="900")])
    second = services.posts.claim(channels=["x"], now=LAUNCH)
    assert second is not None and (second.part, second.reply_to, second.content["text"]) == (1, "900", "post 1")
    services.close()
