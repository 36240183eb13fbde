"""A contact whose language has no template variant gets a message wholly in the
language of the variant they fall back to: its lang, dir, dates, numbers and country
names follow that variant (its own language, or the campaign's for the default
variant), never the contact's. Through preview, templates check, send and posting."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

from outreach.domain.campaign import CampaignInfo, parse_launch
from outreach.imports import import_files
from outreach.scheduling import fire
from outreach.templating import TemplateFile, variant_language
from tests.conftest import Cli
from tests.test_import import contacts
from tests.test_x import LAUNCH, Clock, _services, _workspace, fire_thread

# Written in British English; everything that depends on the language is in it.
PROBE = """{% block subject %}Probe{% endblock %}
{% block text %}
{{ lang }} {{ dir }} | {{ campaign.launch | date("long") }} | {{ 1234567.5 | number }} | {{ "FJ" | country }}
{% endblock %}
{% block html %}<html><body><p>{{ campaign.launch | date("long") }}</p></body></html>{% endblock %}
"""
PROBE_FR = PROBE.replace("Probe", "Sonde")

ENGLISH = "en-GB ltr | 5 September 2014 | 1,234,567.5 | Fiji"
FRENCH = "fr ltr | 5 septembre 2014 | 1\u202f234\u202f567,5 | Fidji"


def one(cli: Cli, where: str) -> str:
    return next(iter(contacts(cli, where)))


def test_variant_language() -> None:
    campaign = CampaignInfo(
        "c", "C", parse_launch("2014-09-05 10:00 Europe/Istanbul"), language="en-GB"
    )
    assert variant_language(TemplateFile("n", "email", None, "n.email.j2"), campaign) == "en-GB"
    assert variant_language(TemplateFile("n", "email", "fr", "n.fr.email.j2"), campaign) == "fr"


def test_preview_of_a_fallback_is_wholly_in_the_variants_language(sample_ws: Cli) -> None:
    templates = sample_ws.workspace / "templates"
    (templates / "probe.email.j2").write_text(PROBE, encoding="utf-8")
    (templates / "probe.fr.email.j2").write_text(PROBE_FR, encoding="utf-8")
    arabic = one(sample_ws, "kind:industry lang:ar")
    out = sample_ws("preview", "probe", "--contact", arabic).stdout
    assert "probe.email.j2 for" in out and "(language en-GB)" in out
    assert ENGLISH in out
    html = (sample_ws.workspace / ".outreach/preview/probe.email.html").read_text("utf-8")
    assert '<html lang="en-GB" dir="ltr">' in html and "5 September 2014" in html
    # --lang picks the variant; the message is in the variant's language
    out = sample_ws("preview", "probe", "--contact", arabic, "--lang", "fr-CA").stdout
    assert "probe.fr.email.j2" in out and FRENCH in out
    # a sample template: the Arabic reader of the English email gets English dates
    out = sample_ws("preview", "cop-industry", "--contact", arabic).stdout
    assert "Today, 5 September 2014, ITU and UNICEF" in out and "سبتمبر" not in out
    html = (sample_ws.workspace / ".outreach/preview/cop-industry.email.html").read_text("utf-8")
    assert '<html lang="en-GB" dir="ltr">' in html and 'dir="rtl"' not in html


def test_templates_check_renders_each_contact_in_the_variants_language(sample_ws: Cli) -> None:
    templates = sample_ws.workspace / "templates"
    guard = '{% if lang != "LANG" or dir != "ltr" %}{{ wrong_language }}{% endif %}'
    (templates / "probe.email.j2").write_text(
        PROBE.replace("{% block text %}", "{% block text %}" + guard.replace("LANG", "en-GB")),
        encoding="utf-8",
    )
    (templates / "probe.fr.email.j2").write_text(
        PROBE_FR.replace("{% block text %}", "{% block text %}" + guard.replace("LANG", "fr")),
        encoding="utf-8",
    )
    out = sample_ws("templates", "check", "probe").stdout
    assert "wrong_language" not in out and "no errors" in out
    assert "ok: templates/probe.email.j2: rendered" in out
    assert "ok: templates/probe.fr.email.j2: rendered" in out


def test_a_sent_fallback_is_wholly_in_the_variants_language(sample_ws: Cli) -> None:
    """Through ``outreach send`` to the local Maildir: the sender renders each message
    in the language of the variant it picked."""
    templates = sample_ws.workspace / "templates"
    (templates / "probe.email.j2").write_text(PROBE, encoding="utf-8")
    (templates / "probe.fr.email.j2").write_text(PROBE_FR, encoding="utf-8")
    where = "kind:industry lang:ar,fr-CA country:SA,AE,CA"
    n = len(contacts(sample_ws, where + " status:active"))
    assert n > 1
    out = sample_ws("send", "probe", "--where", where, "--yes").stdout
    assert f"delivery log: sent {n}" in out
    maildir = sample_ws.workspace / ".outreach" / "outbox" / "new"
    messages = [
        BytesParser(policy=policy.default).parsebytes(p.read_bytes()) for p in maildir.iterdir()
    ]
    assert len(messages) == n
    for message in messages:
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        if message["Subject"] == "Probe":
            assert ENGLISH in text, text
            assert '<html lang="en-GB" dir="ltr">' in html and "5 September 2014" in html
        else:
            assert message["Subject"] == "Sonde"
            assert FRENCH in text, text
            assert '<html lang="fr" dir="ltr">' in html and "5 septembre 2014" in html
    assert {m["Subject"] for m in messages} == {"Probe", "Sonde"}


def test_posts_and_releases_follow_their_variants_language(tmp_path: Path) -> None:
    """An X thread and a press release written only in French, for a campaign in
    British English: rendered in French when their steps fire."""
    ws = _workspace(tmp_path)
    templates = ws / "templates"
    (templates / "cop-launch.x.j2").unlink()
    (templates / "cop-launch.fr.x.j2").write_text(
        'Lancement le {{ campaign.launch | date("long") }} ({{ lang }})\n', encoding="utf-8"
    )
    (templates / "cop-release.press.j2").rename(templates / "cop-release.fr.press.j2")
    services = _services(ws, {}, Clock(LAUNCH))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    fire_thread(services)
    press = next(s for s in services.outbox.steps("cop-2014") if s.channel == "press")
    assert fire(services, "cop-2014", press.key, LAUNCH) == "active"
    services.poster().run_due()
    posts = [json.loads(line) for line in (ws / ".outreach/x/posts.jsonl").read_text().splitlines()]
    assert [p["text"] for p in posts] == ["Lancement le 5 septembre 2014 (fr)"]
    assert services.newsroom().releases()[0]["dateline"] == "ISTANBUL, 5 septembre 2014 –"
    services.close()


def test_x_preview_of_a_template_with_only_a_french_variant(sample_ws: Cli) -> None:
    templates = sample_ws.workspace / "templates"
    (templates / "teaser.fr.x.j2").write_text(
        'Le {{ campaign.launch | date("long") }} : {{ 1234.5 | number }} ({{ lang }})\n',
        encoding="utf-8",
    )
    out = sample_ws("preview", "teaser").stdout
    assert "teaser.fr.x.j2 for the campaign (language fr)" in out
    assert "Le 5 septembre 2014 : 1\u202f234,5 (fr)" in out
    assert "no errors" in sample_ws("templates", "check", "teaser").stdout
