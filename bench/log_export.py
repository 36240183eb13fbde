"""Log export: `outreach log --format csv --limit 0 > /dev/null` over 1,000,000 events in
a SQLite store, against the sqlite3 module dumping the same join to CSV directly,
measured in the same run.

The store is filled in bulk (sqlite3 executemany): one campaign, two steps (two waves),
312,500 contacts with a delivery each, and their events (materialized, sending, one in
ten deferred and sending again, sent: 3.2 per delivery). Prints, for each: wall time, rows/s and peak RSS (the
child's own, from wait4), their ratio, and the export's memory growth: its peak RSS
over 1M events less that of the same command over the latest 1,000 (the modules,
the settings and the database connection are the same; only the rows differ), which
streaming keeps flat. Then the same for --format json.

Run: .venv/bin/python bench/log_export.py [--events N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUTREACH = str(ROOT / ".venv" / "bin" / "outreach")

# the join outreach log reads (events, their step, their delivery and its contact)
JOIN = """
SELECT e.id, e.at, s.campaign, s.key, json_extract(s.settings, '$.wave'), s.channel, e.event,
       e.delivery_id, c.email, d.part, e.detail
FROM delivery_events e JOIN steps s ON s.id = e.step_id
LEFT JOIN deliveries d ON d.id = e.delivery_id LEFT JOIN contacts c ON c.id = d.contact_id
ORDER BY e.id
"""

REFERENCE = f"""
import csv, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
out = csv.writer(sys.stdout, lineterminator="\\n")
out.writerow(["id", "at", "campaign", "step", "wave", "channel", "event", "delivery_id", "email", "part", "detail"])
cursor = db.execute({JOIN!r})
while rows := cursor.fetchmany(5000):
    out.writerows(rows)
"""


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def fill(db_path: Path, events: int) -> None:
    """``events`` log events (4 per delivery) over one campaign's two steps."""
    people = events // 3 + 1  # at least 3 events each: enough, cut at ``events``
    launch = datetime(2014, 9, 5, 7, tzinfo=UTC)
    rng = random.Random(7)
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA journal_mode = MEMORY")
    with db:
        now = _ts(launch - timedelta(days=30))
        db.executemany(
            "INSERT INTO contacts (id, email, email_key, name, kind, country, status, attrs, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'industry', 'FJ', 'active', '{}', ?, ?)",
            ((i, f"person.{i:07d}@member-{i % 997}.example.org", f"person.{i:07d}@member-{i % 997}.example.org",
              f"Person {i}", now, now) for i in range(1, people + 1)),
        )  # fmt: skip
        for sid, key, wave in ((1, "industry-email@20140905T0700Z", "launch"),
                               (2, "pacific-rollout@pacific@20140912T0000Z", "pacific")):  # fmt: skip
            db.execute(
                "INSERT INTO steps (id, campaign, key, channel, template, audience, send_at, status, settings, "
                "created_at) VALUES (?, 'cop-2014', ?, 'email', 'cop-industry', 'kind:industry', ?, 'done', ?, ?)",
                (sid, key, _ts(launch), json.dumps({"plan_step": key.split("@")[0], "wave": wave}), now),
            )  # fmt: skip
        db.executemany(
            "INSERT INTO deliveries (id, step_id, contact_id, status, attempts, due_at, uncertain, message_id, "
            "updated_at) VALUES (?, ?, ?, 'sent', 1, ?, 0, ?, ?)",
            ((i, 1 + (i % 5 == 0), i, _ts(launch), f"<cop-2014.{i:x}.{i}@example.org>", _ts(launch))
             for i in range(1, people + 1)),
        )  # fmt: skip

        def rows():  # type: ignore[no-untyped-def]
            """materialized, sending, (one in ten: deferred, sending again), sent; the
            first ``events`` of them."""
            made = 0
            for i in range(1, people + 1):
                step, t = 1 + (i % 5 == 0), launch + timedelta(milliseconds=i * 3)
                these = [(step, i, _ts(t), "materialized", "{}"), (step, i, _ts(t), "sending", "{}")]
                if rng.random() < 0.1:
                    these += [(step, i, _ts(t), "deferred", json.dumps({
                        "code": 451, "reply": "4.3.0 Temporary local problem", "duration_ms": 12.5,
                        "attempt": 1, "next_attempt": (t + timedelta(minutes=1)).isoformat()})),
                        (step, i, _ts(t + timedelta(minutes=1)), "sending", "{}")]  # fmt: skip
                these.append((step, i, _ts(t + timedelta(minutes=1, seconds=1)), "sent", json.dumps({
                    "code": 250, "reply": f"2.0.0 Ok: queued as 4Xy{i}", "duration_ms": 3.2,
                    "message_id": f"<cop-2014.{i:x}.{i}@example.org>", "attempt": 1})))  # fmt: skip
                yield from these[: events - made]
                made += len(these)
                if made >= events:
                    return

        db.executemany(
            "INSERT INTO delivery_events (step_id, delivery_id, at, event, detail) VALUES (?, ?, ?, ?, ?)", rows()
        )
    db.execute("ANALYZE")
    db.close()


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of ``cmd`` with its output to /dev/null."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode() if proc.stderr else ''}")
    proc.returncode = 0
    return elapsed, usage.ru_maxrss * 1024


def mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build the store in this folder and leave it there")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="outreach-log-bench-"))
    ws = base / "ws"
    (ws / "contacts").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_WORKSPACE": str(ws)}
    db_path = ws / ".outreach" / "outreach.db"
    try:
        if not db_path.exists():
            subprocess.run([OUTREACH, "db", "upgrade"], env=env, check=True, capture_output=True)
            started = time.perf_counter()
            fill(db_path, args.events)
            print(f"filled {args.events:,} events in {time.perf_counter() - started:.1f} s "
                  f"({db_path.stat().st_size / 2**20:,.0f} MB)")  # fmt: skip
        with sqlite3.connect(db_path) as db:
            n = db.execute("SELECT count(*) FROM delivery_events").fetchone()[0]
        ref_s, ref_rss = measured([sys.executable, "-c", REFERENCE, str(db_path)], env)
        print(f"\nreference: sqlite3 module, the same join to csv: {ref_s:.2f} s, {n / ref_s:,.0f} rows/s, "
              f"peak RSS {mb(ref_rss)}")  # fmt: skip
        for fmt in ("csv", "json"):
            small_s, small_rss = measured([OUTREACH, "log", "--format", fmt, "--limit", "1000"], env)
            all_s, all_rss = measured([OUTREACH, "log", "--format", fmt, "--limit", "0"], env)
            print(f"outreach log --format {fmt} --limit 0: {all_s:.2f} s, {n / all_s:,.0f} rows/s, "
                  f"peak RSS {mb(all_rss)} ({all_s / ref_s:.1f}x the reference's time)")  # fmt: skip
            print(f"  the same --limit 1000: {small_s:.2f} s, peak RSS {mb(small_rss)}; growth over "
                  f"{n:,} events: {mb(all_rss - small_rss)}")  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
