"""What templates need from the workspace's other folders: the images of X posts in
media/, and the campaign each template belongs to when schedules/ holds several plans
(or a plan that cannot be read)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from outreach.domain.errors import InputFileError
from outreach.imports import import_files
from outreach.plans import campaign_for, default_campaign_id
from outreach.scheduling import fire, plan_hash, schedule
from tests.conftest import Cli
from tests.test_import import contacts
from tests.test_x import LAUNCH, THREAD, Clock, _services, _workspace, fire_thread


def approve(services) -> None:  # type: ignore[no-untyped-def]
    from outreach.plans import load

    plan = services.settings.workspace / "schedules/cop-guidelines-2014.yaml"
    schedule(services, plan)
    services.outbox.approve(
        "cop-2014", "Tester", plan_hash(services.settings.workspace, plan, load(plan))
    )


THREAD_WITH_IMAGES = (
    'The Guidelines are out. {{ campaign.links.guidelines }}\nimage: cover.png "The cover"\n'
    "---\nFive key areas.\nimage: charts/areas.png\n"
)


# -- images of X posts --------------------------------------------------------------


def test_templates_check_names_the_template_and_each_missing_image(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    (ws / "templates" / "cop-launch.x.j2").write_text(THREAD_WITH_IMAGES, encoding="utf-8")
    out = sample_ws("templates", "check", "cop-launch", ok=False).stdout
    assert "error: templates/cop-launch.x.j2: image 'cover.png' is not in the media folder" in out
    assert (
        "error: templates/cop-launch.x.j2: image 'charts/areas.png' is not in the media folder"
        in out
    )
    assert str(ws / "media" / "cover.png") in out and "2 error(s)" in out
    preview = sample_ws("preview", "cop-launch").stdout
    assert "image 'cover.png' is not in the media folder" in preview
    (ws / "media" / "charts").mkdir(parents=True)
    (ws / "media" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = sample_ws("templates", "check", "cop-launch", ok=False).stdout
    assert "cover.png" not in out and "image 'charts/areas.png' is not in the media folder" in out
    (ws / "media" / "charts" / "areas.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = sample_ws("templates", "check", "cop-launch").stdout
    assert "ok: templates/cop-launch.x.j2: rendered 1 time(s)" in out and "no errors" in out


def test_plan_check_reports_a_missing_image(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    (ws / "templates" / "cop-launch.x.j2").write_text(THREAD_WITH_IMAGES, encoding="utf-8")
    plan = str(ws / "schedules" / "cop-guidelines-2014.yaml")
    out = sample_ws("plan", "check", plan, "--sample", "5", ok=False).stdout
    assert (
        "steps[launch-thread]: error: templates/cop-launch.x.j2: image 'cover.png' is not in the media folder"
        in out
    )


def test_a_thread_with_a_missing_image_fails_when_it_fires_before_any_post(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (ws / "templates" / "cop-launch.x.j2").write_text(THREAD_WITH_IMAGES, encoding="utf-8")
    (ws / "media").mkdir()
    (ws / "media" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    services = _services(ws, {}, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    approve(services)
    assert fire(services, "cop-2014", THREAD, LAUNCH) == "failed"
    assert services.poster().run_due() == 0
    assert not (ws / ".outreach" / "x" / "posts.jsonl").exists()
    reason = services.outbox.events(step_key=THREAD, event="failed")[0]["detail"]["reason"]
    assert (
        "cop-launch.x.j2" in reason
        and "image 'charts/areas.png' is not in the media folder" in reason
    )
    services.close()


def test_a_thread_whose_images_are_there_is_posted_with_them(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (ws / "templates" / "cop-launch.x.j2").write_text(THREAD_WITH_IMAGES, encoding="utf-8")
    (ws / "media" / "charts").mkdir(parents=True)
    (ws / "media" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (ws / "media" / "charts" / "areas.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    services = _services(ws, {}, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    fire_thread(services)
    assert services.poster().run_due() == 2
    posts = [json.loads(x) for x in (ws / ".outreach/x/posts.jsonl").read_text().splitlines()]
    assert [p["images"] for p in posts] == [[{"path": "cover.png", "alt": "The cover"}],
                                            [{"path": "charts/areas.png", "alt": ""}]]  # fmt: skip
    services.close()


# -- several plans ------------------------------------------------------------------

ANNIVERSARY = """{% block subject %}One year of the Guidelines{% endblock %}
{% block text %}
Since {{ campaign.launch | date("long") }}: {{ campaign.links.anniversary }}
Unsubscribe: {{ unsubscribe_url }}
{% endblock %}
"""


def second_plan(ws: Path, *, template: str = "anniversary") -> Path:
    """A second campaign, one year on, whose one step uses ``template``."""
    plan = {
        "campaign": {"id": "cop-2015", "name": "COP Guidelines, one year on", "language": "en-GB",
                     "from": "cop@example.org"},
        "launch": "2015-09-05 10:00 Europe/Istanbul",
        "links": {"anniversary": "https://www.example.org/cop/one-year",
                  "guidelines": "https://www.example.org/cop/guidelines",
                  "press": "https://www.example.org/cop/newsroom/one-year"},
        "steps": [{"id": "partners", "channel": "email", "template": template,
                   "audience": "kind:partner", "at": "T+0 10:00"}],
    }  # fmt: skip
    path = ws / "schedules" / "cop-2015.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    (ws / "templates" / "anniversary.email.j2").write_text(ANNIVERSARY, encoding="utf-8")
    return path


def partner(cli: Cli) -> str:
    return next(iter(contacts(cli, "kind:partner lang:en")))


def test_with_several_plans_each_template_gets_the_campaign_whose_steps_use_it(
    sample_ws: Cli,
) -> None:
    ws = sample_ws.workspace
    second_plan(ws)
    who = partner(sample_ws)
    out = sample_ws("preview", "anniversary", "--contact", who).stdout
    assert "Since 5 September 2015: https://www.example.org/cop/one-year" in out
    out = sample_ws("preview", "cop-industry", "--contact", who).stdout
    assert "Today, 5 September 2014, ITU and UNICEF" in out
    assert "ISTANBUL, 5 September 2014" in sample_ws("preview", "cop-release").stdout
    # every template against its own plan's campaign (cop-2014's has no anniversary link)
    out = sample_ws("templates", "check", "--sample", "20").stdout
    assert "ok: templates/anniversary.email.j2: rendered 20 time(s)" in out
    assert "ok: templates/cop-industry.email.j2: rendered" in out and "no errors" in out


def test_a_template_no_single_plan_uses_asks_for_the_campaign(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    second_plan(ws, template="cop-partner")  # now used by both plans
    (ws / "templates" / "draft.email.j2").write_text(ANNIVERSARY, encoding="utf-8")
    who = partner(sample_ws)
    for name, why in (("cop-partner", "2 of them use cop-partner.email"),
                      ("draft", "none of them uses draft.email")):  # fmt: skip
        refused = sample_ws("preview", name, "--contact", who, ok=False).output
        assert f"2 plans in {ws / 'schedules'}; {why}: say which campaign it is for" in refused
        assert "give --campaign cop-2014 or --campaign cop-2015" in refused
        assert "schedules/cop-2015.yaml (campaign cop-2015)" in refused
        assert "schedules/cop-guidelines-2014.yaml (campaign cop-2014)" in refused
    out = sample_ws("templates", "check", "--sample", "5", ok=False).stdout
    assert "error: templates/draft.email.j2: 2 plans in" in out
    assert "error: templates/cop-partner.email.j2: 2 plans in" in out
    assert "ok: templates/cop-industry.email.j2: rendered 5 time(s)" in out


def test_campaign_takes_an_id_a_plan_file_or_a_plans_name(sample_ws: Cli, tmp_path: Path) -> None:
    ws = sample_ws.workspace
    path = second_plan(ws, template="cop-partner")
    who = partner(sample_ws)
    for choice in ("cop-2015", str(path), "schedules/cop-2015.yaml", "cop-2015.yaml"):
        out = sample_ws("preview", "cop-partner", "--contact", who, "--campaign", choice).stdout
        assert "Istanbul on 5 September 2015" in out, choice
    out = sample_ws("preview", "cop-partner", "--contact", who, "--campaign", "cop-2014").stdout
    assert "Istanbul on 5 September 2014" in out
    out = sample_ws(
        "preview", "cop-partner", "--contact", who, "--campaign", "cop-guidelines-2014"
    ).stdout
    assert "Istanbul on 5 September 2014" in out
    out = sample_ws(
        "templates", "check", "cop-partner", "--campaign", "cop-2015", "--sample", "3"
    ).stdout
    assert "ok: templates/cop-partner.email.j2: rendered 3 time(s)" in out
    unknown = sample_ws(
        "preview", "cop-partner", "--contact", who, "--campaign", "cop-1999", ok=False
    )
    assert f"no plan in {ws / 'schedules'} has the campaign id 'cop-1999'" in unknown.output
    assert "schedules/cop-2015.yaml (campaign cop-2015)" in unknown.output
    missing = sample_ws(
        "preview", "cop-partner", "--campaign", str(tmp_path / "nope.yaml"), ok=False
    )
    assert "nope.yaml: no such plan file" in missing.output


def test_a_broken_plan_breaks_only_what_names_it(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    (ws / "schedules" / "broken.yaml").write_text("campaign: [unclosed\n", encoding="utf-8")
    (ws / "schedules" / "bad-launch.yaml").write_text(
        "campaign: {id: cop-2016, name: Later}\nlaunch: next year\nsteps: []\n", encoding="utf-8"
    )
    who = partner(sample_ws)
    # the one readable plan that uses the template is found
    out = sample_ws("preview", "cop-partner", "--contact", who).stdout
    assert "Istanbul on 5 September 2014" in out
    # sending under a campaign reads schedules/: the unrelated broken plans are skipped
    where = "kind:industry country:SB"
    n = len(contacts(sample_ws, where + " status:active"))
    out = sample_ws(
        "send", "cop-industry", "--where", where, "--campaign", "cop-2014", "--yes"
    ).stdout
    assert f"delivery log: sent {n}" in out
    # a plan named explicitly gives its own error
    named = sample_ws("preview", "cop-release", "--campaign", "schedules/broken.yaml", ok=False)
    assert "broken.yaml:2: not valid YAML" in named.output
    named = sample_ws(
        "send", "cop-industry", "--where", where, "--campaign", "cop-2016", "--yes", ok=False
    )
    assert "bad-launch.yaml: launch 'next year' is not 'YYYY-MM-DD HH:MM Zone/Name'" in named.output


def test_default_campaign_id_for_an_ad_hoc_send(tmp_path: Path) -> None:
    """What ``outreach send`` logs a send under when no --campaign is given."""
    ws = _workspace(tmp_path)
    assert default_campaign_id(ws, "anything.email") == "cop-2014"  # the only plan
    second_plan(ws)
    assert default_campaign_id(ws, "anniversary.email") == "cop-2015"
    assert default_campaign_id(ws, "anniversary") == "cop-2015"
    assert default_campaign_id(ws, "cop-industry") == "cop-2014"
    # used by no plan: sent outside any campaign
    assert default_campaign_id(ws, "draft") is None
    assert default_campaign_id(ws, "cop-industry.x") is None  # kinds are told apart
    # used by both: which one is for the person sending to say
    second_plan(ws, template="cop-industry")
    with pytest.raises(InputFileError, match=r"2 of them use cop-industry\.email") as info:
        default_campaign_id(ws, "cop-industry.email")
    assert info.value.hint and "--campaign cop-2014 or --campaign cop-2015" in info.value.hint
    assert default_campaign_id(ws, "cop-partner") == "cop-2014"
    assert (
        campaign_for(ws, "cop-2015").links["anniversary"] == "https://www.example.org/cop/one-year"
    )
    for plan in (ws / "schedules").iterdir():
        plan.unlink()
    assert default_campaign_id(ws, "cop-industry") is None


def test_send_without_campaign_logs_under_the_plan_that_uses_the_template(sample_ws: Cli) -> None:
    """``outreach send`` with several plans: the template's own campaign (its links,
    its launch), found by ``plans.default_campaign_id``."""
    second_plan(sample_ws.workspace)
    out = sample_ws("send", "anniversary", "--where", "kind:partner", "--yes").stdout
    assert "of campaign cop-2015" in out and "delivery log: sent" in out
    out = sample_ws("send", "cop-industry", "--where", "kind:industry country:SB", "--yes").stdout
    assert "of campaign cop-2014" in out
