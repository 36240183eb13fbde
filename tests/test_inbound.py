"""Mail that comes back: the corpus in tests/bounces/ read as its manifest says, VERP
tokens, the mailbox readers on real files, and a real Dovecot IMAP server."""

from __future__ import annotations

import io
import mailbox
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outreach.inbound import (
    Finding,
    ImapMailbox,
    InboundError,
    Kind,
    content_hash,
    delivery_of,
    interpret,
    read_paths,
    verp_address,
    verp_delivery,
)
from tests.conftest import missing_part
from tools.dovecot import DovecotServer, dovecot_bin, dovecot_server

CORPUS = Path(__file__).resolve().parent / "bounces"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
RETURN_PATH, KEY = "bounces@example.org", b"corpus-key"


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.eml"))


# -- interpretation ------------------------------------------------------------------


def test_the_manifest_names_every_corpus_message_and_only_those() -> None:
    assert sorted(p.name for p in corpus()) == sorted(EXPECTED)
    assert {e["kind"] for e in EXPECTED.values()} == {k.value for k in Kind}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_is_read_as_the_manifest_says(name: str) -> None:
    want = EXPECTED[name]
    raw = (CORPUS / name).read_bytes()
    finding = interpret(raw)
    assert finding.kind == want["kind"], finding.reason
    assert finding.format == want.get("format", "")
    got = [{"address": r.address, "kind": r.kind.value, "action": r.action, "status": r.status}
           for r in finding.recipients]  # fmt: skip
    assert got == want["recipients"]
    assert finding.original_message_id == want["original_message_id"]
    assert delivery_of(finding.envelope_recipients, RETURN_PATH, KEY) == want["delivery"]
    assert want.get("reason", "") in finding.reason
    assert finding.content_hash == content_hash(raw) and len(finding.content_hash) == 64
    assert finding.kind.suppresses == (finding.kind in (Kind.HARD, Kind.COMPLAINT))


def test_a_dsn_keeps_each_recipients_status_and_words() -> None:
    finding = interpret((CORPUS / "rfc3464-several-recipients.eml").read_bytes())
    first = finding.recipients[0]
    assert first.original_recipient == first.final_recipient == "pita.fifita@example.net"
    assert first.diagnostic == "smtp; 550 5.1.1 <pita.fifita@example.net>... User unknown"
    moved = finding.recipients[2]  # the report names the address as given and as delivered
    assert (moved.original_recipient, moved.final_recipient) == (
        "mele.tonga@example.net",
        "m.tonga@mail.example.net",
    )
    assert finding.envelope_id == "cop-2014-industry-102"
    assert finding.message_id == "<200409050912.JAA00777@relay.example.net>"
    assert finding.envelope_recipient == verp_address(RETURN_PATH, 102, KEY)


def test_an_arf_report_gives_its_feedback_type_and_the_original_envelope_sender() -> None:
    finding = interpret((CORPUS / "rfc5965-arf.eml").read_bytes())
    assert finding.feedback_type == "abuse"
    assert finding.envelope_recipients[:2] == (
        "abuse@example.org",
        verp_address(RETURN_PATH, 104, KEY),
    )


def test_a_bounce_that_comes_back_without_a_recipient_block_is_unparseable_with_its_reason() -> (
    None
):
    raw = (CORPUS / "rfc3464-hard-5.1.1.eml").read_bytes()
    cut = (
        raw[: raw.index(b"Original-Recipient:")]
        + b"\n--s8570800012345.1409900408/mx.example.com--\n"
    )
    finding = interpret(cut)
    assert finding.kind is Kind.UNPARSEABLE
    assert finding.reason == "a delivery status report that names no recipient"


def test_an_exception_while_reading_becomes_an_unparseable_finding_not_a_traceback() -> None:
    # a MIME tree deeper than Python's recursion limit: the parser itself gives up
    depth = 2000
    head = "".join(
        f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth)
    )
    raw = ("From: MAILER-DAEMON@example.net\nSubject: Undelivered\n" + head + "x\n").encode()
    finding = interpret(raw)
    assert finding.kind is Kind.UNPARSEABLE
    assert finding.reason.startswith("could not be read (RecursionError")
    assert "Traceback" not in finding.reason and len(finding.reason) < 400


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(EXPECTED)), st.integers(0, 10**6), st.integers(0, 255), st.booleans())
def test_a_damaged_message_never_raises(name: str, where: int, byte: int, truncate: bool) -> None:
    raw = (CORPUS / name).read_bytes()
    at = where % (len(raw) + 1)
    damaged = raw[:at] if truncate else raw[:at] + bytes([byte]) + raw[at + 1 :]
    finding = interpret(damaged)
    assert isinstance(finding, Finding) and finding.kind in Kind
    assert finding.content_hash == content_hash(damaged)


def test_the_content_hash_ignores_what_mailboxes_add_and_line_ends() -> None:
    raw = (CORPUS / "gmail-dsn.eml").read_bytes()
    as_imap = raw.replace(b"\n", b"\r\n")
    redelivered = (
        b"Return-Path: <>\nDelivered-To: someone@example.org\nX-UID: 7\nStatus: RO\n" + raw
    )
    from_quoted = raw.replace(b"\nThe Guidelines", b"\n>From The Guidelines")
    original = raw.replace(b"\nThe Guidelines", b"\nFrom The Guidelines")
    assert (
        content_hash(raw)
        == content_hash(as_imap)
        == content_hash(redelivered)
        == content_hash(raw + b"\n\n")
    )
    assert content_hash(from_quoted) == content_hash(original)
    other = raw.replace(b"maria.garcia@example.com", b"mario.garcia@example.com")
    assert content_hash(other) != content_hash(raw)
    assert len({content_hash(p.read_bytes()) for p in corpus()}) == len(corpus())


# -- VERP ----------------------------------------------------------------------------


def test_a_verp_address_names_its_delivery_and_survives_case_folding() -> None:
    address = verp_address(RETURN_PATH, 42, KEY)
    local = address.split("@")[0]
    assert local.startswith("bounces+42-") and len(local) <= 64 and local == local.lower()
    for form in (
        address,
        address.upper(),
        f"<{address}>",
        address.replace("example.org", "EXAMPLE.ORG"),
    ):
        assert verp_delivery(form, RETURN_PATH, KEY) == 42
    assert verp_delivery(address, "Bounces@Example.ORG", KEY) == 42
    assert verp_delivery(verp_address(RETURN_PATH, 0, KEY), RETURN_PATH, KEY) == 0


def test_a_forged_guessed_or_altered_verp_token_names_no_delivery() -> None:
    address = verp_address(RETURN_PATH, 42, KEY)
    local, domain = address.split("@")
    prefix, sig = local.rsplit("-", 1)
    forged_id = f"bounces+43-{sig}@{domain}"
    other_key = verp_address(RETURN_PATH, 42, b"another key")
    altered = [
        f"{prefix}-{sig[:i]}{'a' if sig[i] != 'a' else 'b'}{sig[i + 1 :]}@{domain}"
        for i in range(len(sig))
    ]
    last_bit = f"{prefix}-{sig[:-1]}{'abcdefghijklmnopqrstuvwxyz234567'[('abcdefghijklmnopqrstuvwxyz234567'.index(sig[-1]) ^ 1)]}@{domain}"
    for bad in [forged_id, other_key, last_bit, *altered, f"{local}@example.com", f"news+42-{sig}@{domain}",
                f"bounces+42@{domain}", f"bounces+42-{sig}x@{domain}", "bounces@example.org", "", "@", "not an address"]:  # fmt: skip
        assert verp_delivery(bad, RETURN_PATH, KEY) is None, bad
    assert verp_delivery(address, RETURN_PATH, b"another key") is None


def test_verp_refuses_a_return_path_it_cannot_extend() -> None:
    with pytest.raises(ValueError, match="already holds"):
        verp_address("bounces+x@example.org", 1, KEY)
    with pytest.raises(ValueError, match="too long"):
        verp_address(f"{'b' * 40}@example.org", 1, KEY)
    with pytest.raises(ValueError, match="not an address"):
        verp_address("bounces", 1, KEY)


# -- readers on files ----------------------------------------------------------------


def _maildir(path: Path, names: list[str]) -> mailbox.Maildir:
    box = mailbox.Maildir(path, create=True)
    for name in names:
        box.add((CORPUS / name).read_bytes())
    return box


def test_a_maildir_is_read_and_a_processed_message_moves_to_the_processed_folder(
    tmp_path: Path,
) -> None:
    names = sorted(EXPECTED)
    _maildir(tmp_path / "bounces", names)
    messages = list(read_paths([tmp_path / "bounces"]))
    assert sorted(content_hash(m.raw) for m in messages) == sorted(
        content_hash((CORPUS / n).read_bytes()) for n in names
    )
    for message in messages[:5]:
        assert message.mark_processed is not None
        message.mark_processed()
        message.mark_processed()  # a second call changes nothing
    processed = sorted(os.listdir(tmp_path / "bounces" / ".Processed" / "cur"))
    assert len(processed) == 5 and all(name.endswith(":2,S") for name in processed)
    assert (tmp_path / "bounces" / ".Processed" / "maildirfolder").exists()
    again = list(read_paths([tmp_path / "bounces"]))
    assert {m.source for m in again} == {m.source for m in messages[5:]}


def test_mbox_eml_files_a_folder_and_stdin_give_the_same_messages(tmp_path: Path) -> None:
    names = ["gmail-dsn.eml", "qmail.eml", "rfc5965-arf.eml"]
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for name in names:
        box.add((CORPUS / name).read_bytes())
    box.close()
    from_mbox = list(read_paths([tmp_path / "bounces.mbox"]))
    from_files = list(read_paths([CORPUS / n for n in names]))
    from_stdin = list(read_paths(["-"], stdin=io.BytesIO((CORPUS / names[0]).read_bytes())))
    from_folder = list(read_paths([CORPUS]))
    assert [m.source for m in from_mbox] == [
        f"{tmp_path / 'bounces.mbox'} message {i}" for i in (1, 2, 3)
    ]
    assert from_stdin[0].source == "stdin" and from_stdin[0].mark_processed is None
    assert all(m.mark_processed is None for m in from_mbox + from_files + from_folder)
    hashes = [content_hash(m.raw) for m in from_files]
    assert [content_hash(m.raw) for m in from_mbox] == hashes
    assert [interpret(m.raw).kind for m in from_mbox] == [Kind.HARD, Kind.HARD, Kind.COMPLAINT]
    assert content_hash(from_stdin[0].raw) == hashes[0]
    assert len(from_folder) == len(EXPECTED)
    assert "bytes" in repr(from_files[0]) and b"From" not in repr(from_files[0]).encode()


def test_a_path_that_is_not_a_mailbox_stops_the_reading_before_any_message(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InboundError, match="no such file or folder") as missing:
        read_paths([CORPUS / "qmail.eml", tmp_path / "nowhere"])
    assert missing.value.code == "inbound_path_missing"
    with pytest.raises(InboundError, match="neither a Maildir") as empty:
        read_paths([tmp_path / "empty"])
    assert empty.value.code == "inbound_not_a_mailbox"


# -- IMAP ----------------------------------------------------------------------------


def required_dovecot() -> Path:
    """The dovecot binary; CI must have it, elsewhere the test skips."""
    binary = dovecot_bin()
    if binary is None:
        missing_part("Dovecot is not installed here (apt-get install dovecot-imapd)")
    return binary


@pytest.fixture
def imap() -> Iterator[DovecotServer]:
    """A throwaway Dovecot on 127.0.0.1 with the user ``bounces`` (plain IMAP and IMAPS)."""
    with dovecot_server(required_dovecot(), tls=True) as server:
        yield server


def _append(server: DovecotServer, names: list[str]) -> None:
    from imap_tools import MailBoxUnencrypted

    with MailBoxUnencrypted(server.host, server.port).login(server.user, server.password) as box:
        for name in names:
            box.append((CORPUS / name).read_bytes(), "INBOX")


def test_imap_reads_unseen_messages_and_moves_each_handled_one_to_processed(
    imap: DovecotServer,
) -> None:
    names = sorted(EXPECTED)
    _append(imap, names)
    with ImapMailbox(imap.url, imap.password) as box:
        messages = list(box.messages())
        assert len(messages) == len(names)
        by_hash = {content_hash((CORPUS / n).read_bytes()): n for n in names}
        for message in messages:
            # the same message as its sender wrote it; but for the binary junk, whose NUL
            # bytes and bare line ends the server rewrites: still junk
            name = by_hash.get(content_hash(message.raw), "unparseable-binary.eml")
            assert interpret(message.raw).kind == EXPECTED[name]["kind"], name
            message.mark_processed()  # type: ignore[misc]
        assert len({content_hash(m.raw) for m in messages} & set(by_hash)) == len(names) - 1
        assert list(box.messages()) == []
    assert imap.count("INBOX") == 0 and imap.count("Processed") == len(names)
    with ImapMailbox(imap.url, imap.password) as box:
        assert list(box.messages()) == []


def test_imap_a_crash_half_way_reads_the_unmarked_messages_again(imap: DovecotServer) -> None:
    names = sorted(EXPECTED)[:12]
    _append(imap, names[:6])
    for name in names[6:]:
        imap.deliver((CORPUS / name).read_bytes())  # delivered on disk, as an MDA does
    box = ImapMailbox(imap.url, imap.password, batch=5)
    box.connect()
    seen = []
    for message in box.messages():
        seen.append(content_hash(message.raw))
        if len(seen) <= 4:
            message.mark_processed()  # type: ignore[misc]
        if len(seen) == 9:
            break  # the process dies here: nothing more is marked
    box.close()
    with ImapMailbox(imap.url, imap.password) as again:
        rest = [content_hash(m.raw) for m in again.messages()]
    assert len(rest) == len(names) - 4
    assert set(seen[4:]) <= set(rest) and not set(seen[:4]) & set(rest)
    assert imap.count("Processed") == 4


def test_imaps_with_tls_reads_the_same(imap: DovecotServer) -> None:
    _append(imap, ["qmail.eml"])
    with ImapMailbox(imap.tls_url, imap.password, ssl_context=imap.ssl_context()) as box:
        [message] = list(box.messages())
        assert interpret(message.raw).addresses == ("s.ahmed@example.net",)
        assert message.source == f"{imap.tls_url} uid 1"


def test_a_message_a_person_has_read_is_left_unless_all_are_asked_for(imap: DovecotServer) -> None:
    from imap_tools import MailBoxUnencrypted

    with MailBoxUnencrypted(imap.host, imap.port).login(imap.user, imap.password) as person:
        person.append((CORPUS / "yahoo.eml").read_bytes(), "INBOX", flag_set=[r"\Seen"])
    with ImapMailbox(imap.url, imap.password) as box:
        assert list(box.messages()) == []
        [message] = list(box.messages(unseen=False))
        assert interpret(message.raw).addresses == ("l.moana@example.net",)


def test_imap_errors_never_show_the_password(imap: DovecotServer) -> None:
    wrong = "S3cret-p@ss/word#1"
    box = ImapMailbox(imap.url, wrong)
    with pytest.raises(InboundError) as refused:
        box.connect()
    assert refused.value.code == "imap_login"
    assert "bounces" in str(refused.value) and wrong not in str(refused.value)
    assert wrong not in repr(box) and wrong not in repr(refused.value)
    with pytest.raises(InboundError) as in_url:
        ImapMailbox(f"imaps://bounces:{wrong}@mail.example.org/INBOX", "")
    assert in_url.value.code == "imap_url" and wrong not in str(in_url.value)
    with pytest.raises(InboundError) as clear:
        ImapMailbox("imap://bounces@mail.example.org/INBOX", wrong)
    assert clear.value.code == "imap_insecure" and wrong not in str(clear.value)
    for bad in (
        "pop3://bounces@127.0.0.1/INBOX",
        "imap://127.0.0.1/INBOX",
        "imap://b@127.0.0.1/INBOX?x=1",
    ):
        with pytest.raises(InboundError, match="IMAP URL"):
            ImapMailbox(bad, wrong)
    closed = ImapMailbox(f"imap://bounces@127.0.0.1:{imap.port}/INBOX", imap.password)
    with pytest.raises(InboundError, match="not connected"):
        list(closed.messages())


def test_imap_url_forms() -> None:
    box = ImapMailbox("imaps://bounces%40example.org@mail.example.org/Bounces%20In", "x")
    assert (box.user, box.host, box.port, box.tls, box.folder) == (
        "bounces@example.org", "mail.example.org", 993, "tls", "Bounces In")  # fmt: skip
    starttls = ImapMailbox("imap://b@mail.example.org?starttls=true", "x")
    assert (starttls.port, starttls.tls, starttls.folder) == (143, "starttls", "INBOX")
