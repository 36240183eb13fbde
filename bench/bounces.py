"""Bounce reading speed: 10,000 messages that came back (made from the corpus in
tests/bounces/, each with its own recipients, Message-IDs and VERP address) in a
Maildir, read and interpreted by outreach.inbound (``read_paths`` + ``interpret``),
against the standard library's parser alone (``email.message_from_binary_file`` with
``policy.default``) on the same files, in one run.

outreach's path adds what the parser does not: finding the report part, reading each
DSN recipient block, the ARF fields and the returned headers, the auto-reply
headers, flufl.bounce's detectors for the non-standard bounces, and the content hash.
It parses with the faster compat32 policy, which flufl.bounce expects.

Run: .venv/bin/python bench/bounces.py [--messages N] [--runs R]
"""

from __future__ import annotations

import argparse
import email
import gc
import mailbox
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from email import policy
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outreach.inbound import delivery_of, interpret, read_paths, verp_address

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "bounces"
RETURN_PATH, KEY = "bounces@example.org", b"corpus-key"
VERP = re.compile(rb"bounces\+\d+-[a-z2-7]{29}@example\.org")
OUR_IDS = re.compile(rb"<cop-2014\.[0-9a-f]{16}\.\d+@example\.org>")


def generate(folder: Path, count: int) -> dict[str, int]:
    """``count`` messages in a Maildir, round-robin over the corpus; the kinds expected."""
    expected = yaml.safe_load((CORPUS / "expected.yaml").read_text())
    names = sorted(expected)
    sources = {n: (CORPUS / n).read_bytes() for n in names}
    box = mailbox.Maildir(folder, create=True)
    kinds: Counter[str] = Counter()
    for i in range(count):
        name = names[i % len(names)]
        raw = sources[name]
        for recipient in expected[name]["recipients"]:
            local, _, domain = recipient["address"].partition("@")
            raw = raw.replace(recipient["address"].encode(), f"{local}.{i}@{domain}".encode())
        raw = VERP.sub(verp_address(RETURN_PATH, 100_000 + i, KEY).encode(), raw)
        raw = OUR_IDS.sub(f"<cop-2014.{i:016x}.{100_000 + i}@example.org>".encode(), raw)
        box.add(raw)
        kinds[expected[name]["kind"]] += 1
    return dict(kinds)


def stdlib_parse(folder: Path, parse_policy: policy.Policy = policy.default) -> int:
    n = 0
    for sub in ("new", "cur"):
        for path in sorted((folder / sub).iterdir()):
            with path.open("rb") as handle:
                email.message_from_binary_file(handle, policy=parse_policy)
            n += 1
    return n


def outreach_read(folder: Path, kinds: Counter[str] | None = None, verp: bool = False) -> int:
    n = 0
    for message in read_paths([folder]):
        finding = interpret(message.raw)
        if verp:
            delivery_of(finding.envelope_recipients, RETURN_PATH, KEY)
        if kinds is not None:
            kinds[finding.kind.value] += 1
        n += 1
    return n


def timed(runs: int, fn, *args) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="outreach-bounces-")) / "Maildir"
    try:
        expected = generate(folder, args.messages)
        got: Counter[str] = Counter()
        outreach_read(folder, got)  # also warms the page cache for both
        if dict(got) != expected:
            raise SystemExit(f"wrong readings: expected {expected}, got {dict(got)}")
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{args.messages} messages, {size / 1e6:.1f} MB in a Maildir; kinds: {dict(sorted(got.items()))}")
        base_best, base_median = timed(args.runs, stdlib_parse, folder)
        compat_best, _ = timed(args.runs, stdlib_parse, folder, policy.compat32)
        ours_best, ours_median = timed(args.runs, outreach_read, folder)
        verp_best, _ = timed(args.runs, outreach_read, folder, None, True)
        n = args.messages
        print(f"stdlib email parser (policy.default): {n / base_best:8.0f} msg/s  (best of {args.runs}; median {n / base_median:.0f})")
        print(f"stdlib email parser (compat32):       {n / compat_best:8.0f} msg/s  (for reference: the policy outreach parses with)")
        print(f"outreach read_paths + interpret:      {n / ours_best:8.0f} msg/s  (best of {args.runs}; median {n / ours_median:.0f})")
        print(f"  ... and the VERP delivery lookup:   {n / verp_best:8.0f} msg/s")
        print(f"ratio outreach / stdlib policy.default: {base_best / ours_best:.2f} (target >= 0.3); "
              f"/ stdlib compat32: {compat_best / ours_best:.2f}")  # fmt: skip
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
