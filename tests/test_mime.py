"""Every message parses back with the standard library, header by header."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outreach.domain.mime import StepHeaders, build, message_id
from outreach.domain.render import RenderedEmail

STEP = StepHeaders.make(
    sender_name="Child Online Protection, ITU · UNICEF", sender="cop@example.org",
    reply_to="press@example.org", campaign_id="cop-2014",
    campaign_name="Guidelines for Industry on Child Online Protection",
)  # fmt: skip
WHEN = datetime(2014, 9, 5, 7, 0, tzinfo=UTC)


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return BytesParser(policy=policy.default).parsebytes(raw)


def body(m, kind: str) -> str:  # type: ignore[no-untyped-def]
    """A part's text with the wire's CRLF line ends as LF."""
    return m.get_body((kind,)).get_content().replace("\r\n", "\n")


def make(
    subject: str,
    text: str,
    html: str | None,
    to_name: str | None = "Hélène Béranger",
    to: str = "helene@example.org",
    eight_bit: bool = False,
) -> bytes:
    email = RenderedEmail(subject, "", text, html, "fr")
    mid = message_id("cop-2014", "industry-email@2014-09-04T21:00Z", 42, STEP.domain)
    return build(STEP, to_name=to_name, to=to, email=email, msg_id=mid, date=WHEN,
                 unsubscribe_url="https://outreach.example.org/u/cop-2014/42/tok",
                 unsubscribe_mailto="mailto:unsubscribe@example.org?subject=unsubscribe%20cop-2014%2042",
                 eight_bit=eight_bit)  # fmt: skip


@pytest.mark.parametrize("eight_bit", [False, True], ids=["quoted-printable", "8bit"])
def test_every_header_parses_back(eight_bit: bool) -> None:
    raw = make("Nouvelles Lignes directrices UIT–UNICEF pour l'industrie sur la protection des enfants en ligne",
               "Bonjour Hélène,\n\n.Une ligne commençant par un point\n", "<p>Bonjour <b>Hélène</b></p>",
               eight_bit=eight_bit)  # fmt: skip
    assert (b"Content-Transfer-Encoding: 8bit" in raw) == eight_bit
    m = parse(raw)
    assert m["From"] == '"Child Online Protection, ITU · UNICEF" <cop@example.org>'
    assert m["From"].addresses[0].addr_spec == "cop@example.org"
    assert m["To"].addresses[0].display_name == "Hélène Béranger"
    assert m["To"].addresses[0].addr_spec == "helene@example.org"
    assert (
        m["Subject"]
        == "Nouvelles Lignes directrices UIT–UNICEF pour l'industrie sur la protection des enfants en ligne"
    )
    assert m["Reply-To"] == "press@example.org"
    assert m["Date"].datetime == WHEN
    assert m["Message-ID"] == "<cop-2014.17dd5f71e9856b13.42@example.org>"
    assert (
        m["List-Id"]
        == "Guidelines for Industry on Child Online Protection <cop-2014.lists.example.org>"
    )
    assert (
        m["List-Unsubscribe"]
        == "<https://outreach.example.org/u/cop-2014/42/tok>, <mailto:unsubscribe@example.org?subject=unsubscribe%20cop-2014%2042>"
    )
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["MIME-Version"] == "1.0"
    assert m.get_content_type() == "multipart/alternative"
    assert body(m, "plain") == "Bonjour Hélène,\n\n.Une ligne commençant par un point\n"
    assert body(m, "html") == "<p>Bonjour <b>Hélène</b></p>"
    assert all(not part.defects for part in m.walk())
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_message_ids_are_deterministic_and_distinct() -> None:
    a = message_id("cop-2014", "step", 1, "example.org")
    assert a == message_id("cop-2014", "step", 1, "example.org")
    assert a != message_id("cop-2014", "step", 2, "example.org")
    assert a != message_id("cop-2014", "step2", 1, "example.org")


def test_text_only_message() -> None:
    m = parse(make("Hello", "Just text\n", None, to_name=None))
    assert m.get_content_type() == "text/plain" and m.get_content() == "Just text\r\n"
    assert m["To"] == "helene@example.org"


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=200
    ).map(lambda s: " ".join(s.split()) or "x"),
    name=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=60).map(
        lambda s: " ".join(s.split()) or None
    ),
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=500)
    | st.text("ab .\n", min_size=990, max_size=1500),  # lines longer than SMTP allows
    eight_bit=st.booleans(),
)
def test_any_subject_name_and_body_round_trip(subject: str, name: str | None, text: str, eight_bit: bool) -> None:
    raw = make(subject, text, "<p>x</p>", to_name=name, eight_bit=eight_bit)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998 and b"\0" not in raw
    m = parse(raw)
    assert m["Subject"] == subject
    if name:
        assert m["To"].addresses[0].display_name == name
    sent = text.replace("\r\n", "\n").replace("\r", "\n")
    assert body(m, "plain").rstrip("\n") == sent.rstrip("\n")


@pytest.mark.parametrize("subject", ["A" * 200, ("word " * 60).strip(), "x" * 990, "y" * 1200])
def test_long_ascii_subjects_fold(subject: str) -> None:
    raw = make(subject, "t", None)
    assert parse(raw)["Subject"] == subject
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
