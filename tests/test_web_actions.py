"""What staff do from the web pages, with the CLI's rules: roles (a role too low gets
403 and changes nothing), four eyes, approve, pause, resume, cancel, retry a failed
delivery, resolve an uncertain post (mark sent, or retry). On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.app import Services
from tests.smtp_server import Faults, Recorder
from tests.test_web import PLAN, SCRIPT, Site, add_user, fire_step, launch, make_workspace
from tests.test_web_routes import database

REFUSAL = f"554 5.7.1 {SCRIPT} message refused"


def _staff(services: Services) -> None:
    for name, role in (("vera", "viewer"), ("otto", "operator"), ("ada", "admin"), ("bob", "admin")):
        add_user(services, name, role)


@pytest.fixture
def launched(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    services, cli = make_workspace(tmp_path, database_url)
    launch(services, cli, Recorder(Faults(data_replies={"ben.okafor@example.com": REFUSAL})))
    _staff(services)
    with Site(services) as site:
        yield site
    services.close()


def _campaign(services: Services) -> dict:  # type: ignore[type-arg]
    stored = services.outbox.campaign("cop-2014")
    assert stored is not None
    return stored


def test_roles_decide_and_a_role_too_low_changes_nothing(launched: Site) -> None:
    services = launched.services
    viewer, operator, admin = launched.browser(), launched.browser(), launched.browser()
    viewer.sign_in("vera")
    operator.sign_in("otto")
    admin.sign_in("ada")
    before = database(services)
    for who, path in ((viewer, "pause"), (viewer, "resume"), (viewer, "approve"), (viewer, "cancel"),
                      (operator, "approve"), (operator, "cancel")):  # fmt: skip
        answer = who.act(f"/campaigns/cop-2014/{path}")
        assert answer.status_code == 403, (path, answer.status_code)
        assert "This needs the role" in answer.text
    failed = services.outbox.events(event="failed", limit=1)[0]["delivery_id"]
    assert viewer.act(f"/deliveries/{failed}/retry").status_code == 403
    assert database(services) == before
    # what each page offers follows the role too
    assert "/pause" not in viewer.get("/campaigns/cop-2014").text
    page = operator.get("/campaigns/cop-2014").text
    assert "/pause" in page and "/approve" not in page and "/cancel" not in page
    # planned against actual, as charts: sends over time with the planned instants, status per step
    assert 'aria-label="sends over time against the plan"' in page and page.count('<svg class="chart"') == 2
    assert "/approve" in admin.get("/campaigns/cop-2014").text

    assert operator.act("/campaigns/cop-2014/pause").headers["location"] == "/campaigns/cop-2014?done=paused"
    assert _campaign(services)["status"] == "paused"
    assert {s.status for s in services.outbox.steps("cop-2014")} >= {"paused"}
    assert "Paused" in operator.get("/campaigns/cop-2014?done=paused").text
    assert operator.act("/campaigns/cop-2014/resume").status_code == 303
    assert _campaign(services)["status"] == "active"
    assert "paused" not in {s.status for s in services.outbox.steps("cop-2014")}

    assert admin.act("/campaigns/cop-2014/approve").status_code == 303
    assert _campaign(services)["approved_by"] == "ada"
    assert admin.act("/campaigns/cop-2014/cancel").status_code == 303
    assert _campaign(services)["status"] == "cancelled"
    assert {s.status for s in services.outbox.steps("cop-2014") if s.status != "active"} <= {"cancelled", "done"}
    refused = admin.act("/campaigns/cop-2014/approve")  # the CLI's rule: a cancelled one is not approved
    assert refused.status_code == 409 and "cancelled" in refused.text


def test_four_eyes_keeps_who_scheduled_from_approving(tmp_path: Path, database_url: str) -> None:
    services, cli = make_workspace(tmp_path, database_url, OUTREACH_FOUR_EYES="true")
    cli("schedule", PLAN, "--by", "Ada")
    assert _campaign(services)["scheduled_by"] == "Ada"
    _staff(services)
    with Site(services) as site:
        ada, bob = site.browser(), site.browser()
        ada.sign_in("ada")
        bob.sign_in("bob")
        assert "scheduled by Ada" in ada.get("/campaigns").text
        fresh = ada.get("/campaigns/cop-2014")  # nothing fired yet: the plan alone
        assert fresh.status_code == 200 and "not approved" in fresh.text and "industry-email" in fresh.text
        before = database(services)
        refused = ada.act("/campaigns/cop-2014/approve")
        assert refused.status_code == 409 and "someone else must approve it" in refused.text
        assert database(services) == before
        assert bob.act("/campaigns/cop-2014/approve").status_code == 303
        assert _campaign(services)["approved_by"] == "bob"
    # the CLI obeys the same rule
    assert "may not approve" in cli("approve", "cop-2014", "--by", "ada", ok=False).output
    cli("schedule", PLAN, "--by", "carol")  # unchanged: still Ada's to keep hands off
    assert _campaign(services)["scheduled_by"] == "Ada"
    services.close()


def test_a_failed_delivery_is_retried_and_its_reply_shown_as_text(launched: Site) -> None:
    services = launched.services
    operator = launched.browser()
    operator.sign_in("otto")
    failed = services.outbox.events(event="failed", limit=1)[0]["delivery_id"]
    for page in (f"/deliveries/{failed}", "/log?event=failed", "/campaigns/cop-2014", "/log?q=okafor"):
        text = operator.get(page).text
        assert SCRIPT not in text, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, page
    assert operator.act(f"/deliveries/{failed}/retry").headers["location"] == f"/deliveries/{failed}?done=retried"
    assert services.posts.delivery(failed)["status"] == "queued"
    retried = services.outbox.events(delivery_id=failed, event="retry")[0]
    assert retried["detail"]["reason"] == "retried by otto"
    again = operator.act(f"/deliveries/{failed}/retry")  # queued now: the CLI's rule refuses
    assert again.status_code == 409 and "only an uncertain or failed one" in again.text


def test_an_uncertain_post_is_marked_sent_or_retried(launched: Site) -> None:
    services = launched.services
    fire_step(services, "launch-thread")
    first = services.posts.claim(channels=["x"])
    assert first is not None
    services.outbox.recover()  # its poster died mid-post: X may or may not have it
    assert services.posts.delivery(first.delivery_id)["status"] == "uncertain"
    operator = launched.browser()
    operator.sign_in("otto")
    page = operator.get(f"/deliveries/{first.delivery_id}").text
    assert "Mark sent" in page and "Send again" in page
    bad = operator.act(f"/deliveries/{first.delivery_id}/mark-sent", post_id="not-a-number")
    assert bad.status_code == 409 and services.posts.delivery(first.delivery_id)["status"] == "uncertain"
    done = operator.act(f"/deliveries/{first.delivery_id}/mark-sent", post_id="1880028106020515840")
    assert done.status_code == 303
    row = services.posts.delivery(first.delivery_id)
    assert (row["status"], row["message_id"]) == ("sent", "1880028106020515840")
    second = services.posts.claim(channels=["x"])  # the thread goes on from it
    assert second is not None and second.reply_to == "1880028106020515840"
    services.outbox.recover()
    assert operator.act(f"/deliveries/{second.delivery_id}/retry").status_code == 303
    assert services.posts.delivery(second.delivery_id)["status"] == "queued"


def test_the_campaign_pages_show_plan_against_actual(launched: Site) -> None:
    viewer = launched.browser()
    viewer.sign_in("vera")
    listing = viewer.get("/campaigns").text
    assert "Guidelines for Industry on Child Online Protection" in listing
    assert "approved by approver" in listing and "sent 2" in listing and "failed 1" in listing
    page = viewer.get("/campaigns/cop-2014").text
    for expected in ("industry-email@20140905T0800Z", "embargoed-media", "Failures by reason",
                     "message refused", "/campaigns/cop-2014/report"):  # fmt: skip
        assert expected in page, expected
    report = viewer.get("/campaigns/cop-2014/report")
    assert report.status_code == 200 and "<svg" in report.text and SCRIPT not in report.text
    assert "script-src" not in report.headers["content-security-policy"]
    assert viewer.get("/campaigns/no-such").status_code == 404
