"""Sending speed: a real step of personalised ~4 KB emails from the outbox to
Postfix's ``smtp-sink``, against ``smtp-source`` (16 sessions, 4 KB messages) and a
naive stdlib sender (``EmailMessage`` + ``smtplib``, a new connection per message),
all in one run.

Run: make bench   (or .venv/bin/python bench/send.py [--contacts N] [--large])
Needs smtp-sink and smtp-source (Debian package postfix; the postfix daemon itself
is not used and must not be left running).
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from import_contacts import run_measured  # noqa: E402

from outreach.app import build  # noqa: E402
from outreach.channels.maildir import free_port  # noqa: E402
from outreach.config import load_settings  # noqa: E402
from outreach.imports import import_files  # noqa: E402
from outreach.templating import render_values  # noqa: E402


def need(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if not path:
        sys.exit(
            f"{tool} is needed: apt-get install postfix (then make sure the postfix daemon is stopped)"
        )
    return path


def make_workspace(folder: Path, contacts: int) -> Path:
    ws = folder / "ws"
    for name in ("templates", "schedules"):
        shutil.copytree(ROOT / name, ws / name)
    (ws / "contacts").mkdir()
    lines = ["email,name,organization,kind,sector,country,language"]
    sectors = ["mobile operator", "ISP", "content provider", "device maker", "broadcaster"]
    for i in range(contacts):
        lines.append(f"person{i}@org{i % 997}.example.org,Person Number {i},Organisation {i % 997},"
                     f"industry,{sectors[i % 5]},FJ,en")  # fmt: skip
    (ws / "contacts" / "bench.csv").write_text("\n".join(lines) + "\n")
    return ws


def outreach_step(ws: Path, port: int, contacts: int) -> tuple[float, int, int]:
    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_WORKSPACE": str(ws),
           "OUTREACH_SECRET_KEY": "bench", "OUTREACH_RATE_PER_SECOND": "1000000000",
           "OUTREACH_RATE_PER_HOUR": "1000000000",
           "OUTREACH_SMTP_URL": f"smtp://127.0.0.1:{port}?pool=16"}  # fmt: skip
    services = build(
        load_settings(ws, env={k: v for k, v in env.items() if k.startswith("OUTREACH_")})
    )
    import_files(services.contacts, [ws / "contacts" / "bench.csv"])
    from datetime import UTC, datetime

    step = services.outbox.ensure_step(campaign="cop-2014", key="bench", channel="email",
                                       template="cop-industry", audience="kind:industry",
                                       send_at=datetime.now(UTC))  # fmt: skip
    assert services.outbox.materialize(step) == contacts
    exe = str(Path(sys.executable).with_name("outreach"))
    elapsed, main_rss, tree_rss, out = run_measured([exe, "run", "--until-idle"], env)
    counts = services.outbox.counts(step_id=step.id)
    if counts != {"sent": contacts}:
        sys.exit(f"not everything was sent: {counts}\n{out}")
    services.close()
    return elapsed, main_rss, tree_rss


def naive(ws: Path, port: int, messages: int) -> float:
    """The stdlib way: EmailMessage for each recipient, a new SMTP connection each."""
    services = build(
        load_settings(ws, env={"OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "bench"})
    )
    campaign = services.campaign("cop-2014")
    _kind, variants = services.templates.variants("cop-industry", "email")
    template = services.templates.compile(variants[None])
    people = services.contacts.find(
        __import__("outreach.domain.audience", fromlist=["parse"]).parse("kind:industry"),
        limit=messages,
    )
    start = time.perf_counter()
    for c in people:
        urls = services.links.for_contact("cop-2014", "naive", c.id)
        email = template.render(render_values(campaign, contact=c, urls=urls))  # type: ignore[union-attr]
        msg = EmailMessage()
        msg["From"] = '"Child Online Protection, ITU and UNICEF" <cop@example.org>'
        msg["To"] = f"{c.name} <{c.email}>"
        msg["Subject"] = email.subject
        msg["List-Unsubscribe"] = f"<{urls['unsubscribe_url']}>"
        msg.set_content(email.text)
        msg.add_alternative(email.html or "", subtype="html")
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(msg)
    elapsed = time.perf_counter() - start
    services.close()
    return len(people) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--large", action="store_true", help="also 100,000 contacts, for memory")
    args = parser.parse_args()
    sink, source = need("smtp-sink"), need("smtp-source")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink_proc = subprocess.Popen([sink, *user, "-c", f"127.0.0.1:{port}", "2000"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="outreach-send-"))
    try:
        time.sleep(0.3)
        n = args.contacts
        start = time.perf_counter()
        subprocess.run([source, "-s", "16", "-l", "4096", "-m", str(n), "-f", "cop@example.org",
                        "-t", "someone@example.org", f"127.0.0.1:{port}"], check=True)  # fmt: skip
        reference = n / (time.perf_counter() - start)
        ws = make_workspace(work / "small", n)
        elapsed, rss, tree = outreach_step(ws, port, n)
        ours = n / elapsed
        base = naive(ws, port, min(1000, n))
        print(f"smtp-source, 16 sessions, 4 KB (reference)  {reference:9,.0f} msgs/s")
        print(
            f"outreach, {n:,} personalised emails          {ours:9,.0f} msgs/s   ({elapsed:.1f} s, records committed)"
        )
        print(f"naive EmailMessage + smtplib, new connection  {base:9,.0f} msgs/s")
        print(
            f"ratio outreach / smtp-source                  {ours / reference:9.2f}        target >= 0.25"
        )
        print(
            f"ratio outreach / naive                        {ours / base:9.1f}        target >= 12"
        )
        print(
            f"peak RSS at {n:,}: sender {rss / 2**20:.0f} MB, with its workers {tree / 2**20:.0f} MB"
        )
        if args.large:
            big = 100_000
            ws_big = make_workspace(work / "large", big)
            elapsed_big, rss_big, tree_big = outreach_step(ws_big, port, big)
            print(f"outreach, {big:,} personalised emails         {big / elapsed_big:9,.0f} msgs/s")
            print(f"peak RSS at {big:,}: sender {rss_big / 2**20:.0f} MB, with its workers {tree_big / 2**20:.0f} MB; "
                  f"ratio to {n:,}: {tree_big / tree:.2f} (target <= 1.2)")  # fmt: skip
    finally:
        sink_proc.terminate()
        sink_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
