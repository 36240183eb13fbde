"""Templates: sandbox, escaping, CSS inlining, languages, X length, press, check, preview."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import css_inline
import pytest
import yaml

from outreach.domain.campaign import CampaignInfo, parse_launch
from outreach.domain.contact import Contact
from outreach.domain.errors import TemplateError, TemplateSecurityError
from outreach.domain.render import x_post
from outreach.templating import TemplateLibrary, check_templates, render_values, variant_language
from tests.conftest import ROOT, SHARED, Cli

CAMPAIGN = CampaignInfo(
    "cop-2014",
    "Guidelines for Industry on Child Online Protection",
    parse_launch("2014-09-05 10:00 Europe/Istanbul"),
    {"guidelines": "https://example.org/g", "press": "https://example.org/p",
     "checklist": "https://example.org/c", "pledge": "https://example.org/pl"},
)  # fmt: skip
URLS = {
    "unsubscribe_url": "https://example.org/u/1",
    "view_in_browser_url": "https://example.org/v/1",
}


def person(**fields) -> Contact:  # type: ignore[no-untyped-def]
    base = dict(
        id=1, email="ana@example.org", name="Ana Tuilagi", organization="Blue Telecom Samoa",
        kind="industry", sector="mobile operator", country="WS", language="en",
        timezone="Pacific/Apia", x_handle=None, status="active", tags=(), attrs={},
        created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
    )  # fmt: skip
    base.update(fields)
    return Contact(**base)


@pytest.fixture
def sample_library() -> TemplateLibrary:
    return TemplateLibrary(ROOT / "templates")


@pytest.fixture
def own(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A templates folder of the test's own, with the sample layouts in it."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates" / "_layouts", root / "_layouts")
    shutil.copytree(ROOT / "templates" / "_partials", root / "_partials")

    def write(name: str, text: str) -> TemplateLibrary:
        (root / name).write_text(text, encoding="utf-8")
        return TemplateLibrary(root)

    return write


def render_email(library: TemplateLibrary, name: str, contact: Contact, lang: str | None = None):  # type: ignore[no-untyped-def]
    _kind, variants = library.variants(name)
    file = library.pick(variants, lang or contact.language)
    return library.compile(file).render(
        render_values(CAMPAIGN, contact=contact, urls=URLS, lang=lang or variant_language(file, CAMPAIGN))
    )  # type: ignore[union-attr]


# -- safety ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["''.__class__.__mro__", "cycler.__init__.__globals__", "contact.__class__", "campaign.launch.__class__.__mro__",
     "(1).__class__", "lipsum.__globals__", "contact._private"],
)  # fmt: skip
def test_hostile_templates_fail_with_a_security_error(own, expression: str) -> None:  # type: ignore[no-untyped-def]
    library = own(
        "evil.email.j2",
        "{% block subject %}x{% endblock %}\n{% block text %}\n\n{{ "
        + expression
        + " }}{% endblock %}",
    )
    with pytest.raises((TemplateSecurityError, TemplateError)) as info:
        render_email(library, "evil", person())
    assert "evil.email.j2" in str(info.value)
    if "_private" not in expression:
        assert isinstance(info.value, TemplateSecurityError)
        assert "evil.email.j2:4" in str(info.value) and "not allowed" in str(info.value)


def test_html_is_escaped_text_and_subject_are_not(own) -> None:  # type: ignore[no-untyped-def]
    library = own(
        "esc.email.j2",
        '{% extends "_layouts/email.html.j2" %}{% block subject %}Hi {{ contact.name }}{% endblock %}'
        "{% block content %}<p>Hi {{ contact.name }}</p>{% endblock %}{% block text %}Hi {{ contact.name }}{% endblock %}",
    )
    email = render_email(library, "esc", person(name="<b>Tom & Jerry</b>"))
    assert email.subject == "Hi <b>Tom & Jerry</b>"
    assert email.text == "Hi <b>Tom & Jerry</b>\n"
    assert "<p style=" in email.html and "Hi &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>" in email.html


def test_headers_never_carry_line_breaks(own) -> None:  # type: ignore[no-untyped-def]
    library = own("hdr.email.j2", "{% block subject %}Hello\r\n{{ contact.name }}\n{% endblock %}"
                  "{% block preheader %}a\nb{% endblock %}{% block text %}x{% endblock %}")  # fmt: skip
    email = render_email(library, "hdr", person(name="Ana\r\nBcc: victim@example.org\x00"))
    assert email.subject == "Hello Ana Bcc: victim@example.org"
    assert email.preheader == "a b"
    assert "\n" not in email.subject and "\r" not in email.subject


def test_missing_values_are_errors_unless_defaulted(own) -> None:  # type: ignore[no-untyped-def]
    library = own(
        "u.email.j2",
        "{% block subject %}x{% endblock %}{% block text %}\n{{ contact.attrs.title }}{% endblock %}",
    )
    with pytest.raises(TemplateError) as info:
        render_email(library, "u", person())
    assert "u.email.j2:2" in str(info.value) and "undefined value" in str(info.value)
    assert "default" in (info.value.hint or "")
    library = own(
        "d.email.j2",
        '{% block subject %}x{% endblock %}{% block text %}{{ contact.attrs.title | default("Sir") }} {{ contact.x_handle | default("") }}{% endblock %}',
    )
    assert render_email(library, "d", person()).text == "Sir\n"  # text is stripped


def test_errors_in_html_name_the_file_the_person_wrote(own) -> None:  # type: ignore[no-untyped-def]
    library = own(
        "h.email.j2",
        '{% extends "_layouts/email.html.j2" %}\n{% block subject %}x{% endblock %}\n'
        "{% block content %}\n<p>fine</p>\n<p>{{ contact.nope }}</p>\n{% endblock %}\n{% block text %}x{% endblock %}",
    )
    with pytest.raises(TemplateError) as info:
        render_email(library, "h", person())
    assert "h.email.j2:5" in str(info.value)


def test_syntax_errors_name_file_and_line(own) -> None:  # type: ignore[no-untyped-def]
    library = own(
        "s.email.j2", "{% block subject %}x{% endblock %}\n{% block text %}\n{% if %}{% endblock %}"
    )
    with pytest.raises(TemplateError, match=r"s.email.j2:3: syntax error"):
        library.compile(library.variants("s")[1][None])


# -- HTML email --------------------------------------------------------------------


def _styles(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<(\w+)[^>]*?style="([^"]*)"', html)


def test_css_is_inlined_once_per_template_and_matches_inlining_each_message(
    sample_library: TemplateLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = css_inline.inline
    monkeypatch.setattr(css_inline, "inline", lambda *a, **k: calls.append(1) or real(*a, **k))
    contacts = [person(id=i, name=f"Person {i}", email=f"p{i}@example.org") for i in range(5)]
    rendered = [render_email(sample_library, "cop-industry", c) for c in contacts]
    assert len(calls) == 1  # compiled once, rendered five times
    # the same styles as inlining the message itself after rendering
    from outreach.domain.render import _Blocks

    library = sample_library
    blocks = _Blocks(library.html_env, "cop-industry.email.j2")
    values = render_values(CAMPAIGN, contact=contacts[0], urls=URLS)
    plain = blocks.render(blocks.context(values), "html")
    assert "style=" not in plain.split("</head>")[1]
    assert _styles(rendered[0].html) == _styles(real(plain, keep_style_tags=True))
    assert len(_styles(rendered[0].html)) > 10


def test_lang_and_dir_follow_the_variant_sent(sample_library: TemplateLibrary) -> None:
    arabic = render_email(sample_library, "cop-partner", person(language="ar"))
    assert f'<html lang="{CAMPAIGN.language}" dir="ltr">' in arabic.html  # no Arabic variant
    assert '<html lang="ar" dir="rtl">' in render_email(sample_library, "cop-partner", person(), lang="ar").html


def test_text_part_is_made_from_html_when_there_is_no_text_block(own) -> None:  # type: ignore[no-untyped-def]
    library = own(
        "h.email.j2",
        '{% extends "_layouts/email.html.j2" %}{% block subject %}s{% endblock %}'
        '{% block content %}<h1>Title</h1><p>Read <a href="https://example.org/x">this</a>.</p>{% endblock %}',
    )
    email = render_email(library, "h", person())
    assert (
        email.text_generated and "# Title" in email.text and "https://example.org/x" in email.text
    )
    report = check_templates(library, CAMPAIGN, [person()], urls_for=lambda c: URLS)
    assert any("HTML without a text part" in str(f) for f in report.findings)


# -- languages and dates -----------------------------------------------------------


def test_language_variants_fall_back_along_the_chain(sample_library: TemplateLibrary) -> None:
    _kind, variants = sample_library.variants("cop-industry")
    assert sample_library.pick(variants, "fr-CA").lang == "fr"
    assert sample_library.pick(variants, "FR").lang == "fr"
    assert sample_library.pick(variants, "es").lang is None
    assert sample_library.pick(variants, None).lang is None
    french = render_email(sample_library, "cop-industry", person(language="fr-CA", name="Chloé"))
    assert french.subject.startswith("Nouvelles Lignes directrices")
    assert "le 5 septembre 2014" in french.text and "Madame, Monsieur Chloé," in french.text
    english = render_email(sample_library, "cop-industry", person())
    assert "Today, September 5, 2014" in english.text


def test_launch_is_shown_in_the_contacts_zone(sample_library: TemplateLibrary) -> None:
    fiji = render_email(sample_library, "cop-embargoed", person(timezone="Pacific/Fiji"))
    assert (
        "EMBARGOED UNTIL 5 September 2014, 19:00 Fiji Standard Time (5 September 2014, 07:00 UTC)"
        in fiji.text
    )
    assert fiji.subject.startswith("EMBARGOED UNTIL 5 Sep 2014, 19:00 Fiji Standard Time (07:00 UTC): ITU")
    istanbul = render_email(sample_library, "cop-embargoed", person(timezone=None))
    assert "EMBARGOED UNTIL 5 September 2014, 10:00 Türkiye Summer Time" in istanbul.text


# -- X -----------------------------------------------------------------------------


def _conformance_cases():  # type: ignore[no-untyped-def]
    path = SHARED / "conformance" / "twitter-text" / "validate.yml"
    if not path.exists():
        return [
            pytest.param(
                None, marks=pytest.mark.skip(reason=f"conformance data not found at {path}")
            )
        ]
    tests = yaml.safe_load(path.read_text("utf-8"))["tests"]
    return [
        pytest.param(case, id=f"{section}:{case['description']}")
        for section in (
            "WeightedTweetsWithDiscountedEmojiCounterTest",
            "UnicodeDirectionalMarkerCounterTest",
        )
        for case in tests[section]
    ]


@pytest.mark.parametrize("case", _conformance_cases())
def test_x_weighted_length_matches_twitter_text_conformance(case) -> None:  # type: ignore[no-untyped-def]
    post = x_post(case["text"])
    assert post.weighted_length == case["expected"]["weightedLength"]
    assert post.valid == case["expected"]["valid"]


def test_sample_thread_and_an_overlong_post(sample_library: TemplateLibrary, own) -> None:  # type: ignore[no-untyped-def]
    _kind, variants = sample_library.variants("cop-launch")
    posts = sample_library.compile(variants[None]).render(render_values(CAMPAIGN))  # type: ignore[union-attr]
    assert len(posts) == 3 and all(p.valid for p in posts)
    assert posts[0].text.startswith("Today in Istanbul")
    library = own("long.x.j2", "short one\n---\n" + "😷" * 141)
    report = check_templates(library, CAMPAIGN, [], names=["long"])
    assert report.errors == 1
    assert (
        str(report.findings[0])
        == "error: templates/long.x.j2: post 2 of 2 is 282 long as X counts it; at most 280"
    )


# -- press -------------------------------------------------------------------------


def test_press_release_with_dateline_and_embargo(sample_library: TemplateLibrary, own) -> None:  # type: ignore[no-untyped-def]
    _kind, variants = sample_library.variants("cop-release")
    press = sample_library.compile(variants[None]).render(render_values(CAMPAIGN))  # type: ignore[union-attr]
    assert (
        press.headline
        == "ITU and UNICEF release Guidelines for Industry on Child Online Protection"
    )
    assert press.dateline == "ISTANBUL, September 5, 2014 –"
    assert "<ol>" in press.body_html and "<strong>Guidelines for Industry" in press.body_html
    assert (
        press.html.startswith("<!DOCTYPE html>") and "ISTANBUL, September 5, 2014 –" in press.html
    )
    library = own(
        "e.press.j2",
        "---\nheadline: H & <i>\nembargo: EMBARGOED UNTIL 5 September\n---\n<script>x</script> body",
    )
    embargoed = library.compile(library.variants("e")[1][None]).render(render_values(CAMPAIGN))  # type: ignore[union-attr]
    assert embargoed.embargo == "EMBARGOED UNTIL 5 September"
    assert (
        "&lt;script&gt;" in embargoed.body_html
        and "<title>H &amp; &lt;i&gt;</title>" in embargoed.html
    )
    broken = own("b.press.j2", "no front matter")
    with pytest.raises(TemplateError, match="front matter"):
        broken.compile(broken.variants("b")[1][None]).render(render_values(CAMPAIGN))  # type: ignore[union-attr]


# -- the commands ------------------------------------------------------------------


def test_templates_check_passes_on_the_sample(sample_ws: Cli) -> None:
    out = sample_ws("templates", "check").stdout
    assert "ok: templates/cop-industry.fr.email.j2: rendered 92 time(s)" in out
    assert (
        "ok: templates/cop-launch.x.j2: rendered 1 time(s)  posts: 204/280, 221/280, 161/280" in out
    )
    assert "no errors" in out
    sampled = sample_ws("templates", "check", "cop-partner", "--sample", "10").stdout
    assert "cop-partner.email.j2: rendered 10 time(s)" in sampled


def test_templates_check_reports_what_a_person_can_fix(sample_ws: Cli) -> None:
    templates = sample_ws.workspace / "templates"
    (templates / "bad.email.j2").write_text(
        "{% block subject %}{% endblock %}{% block text %}\n{{ contact.attrs.beat }}{% endblock %}"
    )
    (templates / "broken.email.j2").write_text(
        "{% block subject %}x{% endblock %}\n{% block text %}{{ oops( }}{% endblock %}"
    )
    (templates / "notes.txt.j2").write_text("x")
    result = sample_ws("templates", "check", ok=False)
    out = result.stdout
    assert "error: templates/broken.email.j2:2: syntax error: unexpected '}', expected ')'" in out
    assert re.search(
        r"error: templates/bad.email.j2:2: undefined value: 'dict object' has no attribute 'beat' \(contact \S+@\S+ and \d+ more\)",
        out,
    )
    assert re.search(
        r"error: templates/bad.email.j2: the subject is empty \(contact \S+ and \d+ more\)", out
    )
    assert "templates/bad.email.j2: rendered" not in out
    assert "notes.txt.j2: not a template name" in out
    assert "error(s)" in out


def test_preview_each_kind(sample_ws: Cli) -> None:
    email = next(
        iter(
            __import__("tests.test_import", fromlist=["contacts"]).contacts(
                sample_ws, "kind:industry lang:fr"
            )
        )
    )
    out = sample_ws("preview", "cop-industry", "--contact", email).stdout
    assert "cop-industry.fr.email.j2" in out and "Subject:   Nouvelles Lignes directrices" in out
    html = (sample_ws.workspace / ".outreach" / "preview" / "cop-industry.email.html").read_text()
    assert '<html lang="fr" dir="ltr">' in html and "/u/cop-2014/" in html
    out = sample_ws(
        "preview",
        "cop-industry",
        "--contact",
        email,
        "--lang",
        "en",
        "--out",
        str(sample_ws.workspace / "p.html"),
    ).stdout
    assert (
        "Subject:   New ITU–UNICEF Guidelines" in out and (sample_ws.workspace / "p.html").exists()
    )
    x = sample_ws("preview", "cop-launch").stdout
    assert "post 1 of 3: 204/280" in x and "post 3 of 3: 161/280" in x
    press = sample_ws("preview", "cop-release").stdout
    assert "ISTANBUL, 5 September 2014 –" in press
    assert "needs --contact" in sample_ws("preview", "cop-industry", ok=False).output
    assert "did you mean cop-industry" in sample_ws("preview", "cop-industri", ok=False).output


def test_dates_of_one_instant_are_shown_in_each_readers_zone(sample_library: TemplateLibrary) -> None:
    """The same instant in two zones compares equal in Python: formatting may not mix them."""
    fiji = render_email(sample_library, "cop-embargoed", person(timezone="Pacific/Fiji"))
    niue = render_email(sample_library, "cop-embargoed", person(timezone="Pacific/Niue"))
    fiji_again = render_email(sample_library, "cop-embargoed", person(timezone="Pacific/Fiji"))
    assert "19:00 Fiji Standard Time" in fiji.subject and fiji_again.subject == fiji.subject
    assert "4 Sep 2014, 20:00 Niue Time" in niue.subject
