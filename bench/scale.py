"""Scaling out: many sender processes around one PostgreSQL database, against one
``outreach run`` on SQLite, and what a sender killed with SIGKILL leaves behind, all in
one run.

1. Reference: one ``outreach run --until-idle`` on a SQLite workspace (its default
   workers: one per core) sends a step of ``--contacts`` personalised emails (default
   20,000) to Postfix's ``smtp-sink`` (bench/send.py's ``outreach_step``); msgs/s.
2. On a throwaway PostgreSQL server (tools/pgtemp.py), the same step sent by 1, 2 and
   4 processes ``outreach -w FOLDER run --role sender --workers 1 --until-idle``, each
   in a workspace folder of its own (as on machines of their own), all with the same
   OUTREACH_DATABASE_URL, each time on a fresh database (a copy of one holding the
   contacts, made with CREATE DATABASE ... TEMPLATE); the rate limit does not bind
   (OUTREACH_RATE_PER_SECOND=100000). msgs/s from the first start to the last exit,
   with the ratio to the SQLite reference and to one sender, what each sender sent, and
   the CPU time of the senders and of the PostgreSQL server meanwhile.
3. A crash: a sender (``run --role sender --workers 1``) sending a step is killed with
   SIGKILL part-way, then a sender in another folder finishes the step
   (``--until-idle``, OUTREACH_LEASE_SECONDS=3 for both, so that the dead one's rows
   are taken over within seconds). Once at the default rate (50/s: no
   OUTREACH_RATE_PER_SECOND; ``--crash-contacts`` recipients, killed once about 5 s of
   messages have arrived) and once at full speed (a quarter of ``--contacts``, at
   least 1,000, killed once a third has arrived). The server here is a small aiosmtpd
   server in this process that counts each recipient's messages (smtp-sink cannot name
   them); it counts the recipients who got the message twice (and those of them with no
   ``uncertain`` entry in the log: there should be none), the deliveries logged
   ``uncertain``, and the rows still ``sending`` at the kill, and of them ``handed``.
   Targets: at most 10 duplicates per crash at 50/s, at most 100 at full speed.

Every SMTP URL has ``?pool=16``. The machine is shared and noisy: read the ratios
against the reference measured in the same run.

Run: .venv/bin/python bench/scale.py [--contacts N] [--crash-contacts N]
Needs smtp-sink (Debian package postfix; the postfix daemon itself is not used and
must not be left running) and the PostgreSQL server binaries (pg_ctl, initdb).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import sqlalchemy as sa  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from import_contacts import server_cpu  # noqa: E402
from send import make_workspace, need, outreach_step  # noqa: E402

from outreach.app import Services, build  # noqa: E402
from outreach.channels.maildir import free_port  # noqa: E402
from outreach.config import load_settings  # noqa: E402
from outreach.db.models import deliveries, delivery_events  # noqa: E402
from outreach.imports import import_files  # noqa: E402
from tools.pgtemp import pg_bin, postgres_server  # noqa: E402

EXE = str(Path(sys.executable).with_name("outreach"))
FULL_SPEED = {"OUTREACH_RATE_PER_SECOND": "100000", "OUTREACH_RATE_PER_HOUR": "1000000000"}
POOL = 16
SENDERS = (1, 2, 4)
CRASH_TARGETS = {"50/s": 10, "full speed": 100}


class Counting:
    """An aiosmtpd handler that takes every message and counts them by recipient."""

    def __init__(self) -> None:
        self.got: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.got.update(envelope.rcpt_tos)  # type: ignore[attr-defined]
        return "250 2.0.0 Ok: queued"

    def total(self) -> int:
        with self.lock:
            return sum(self.got.values())


@contextmanager
def counting_server() -> Iterator[tuple[Counting, int]]:
    handler, port = Counting(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@dataclass
class Run:
    senders: int
    seconds: float
    cpu: float  # CPU seconds of the sender processes (with their children)
    shares: list[int]  # deliveries sent by each process
    span: float  # seconds from the first claim to the last message sent (start-up and exit left out)
    db_cpu: float = 0.0  # CPU seconds of the PostgreSQL server meanwhile

    def rate(self, n: int) -> float:
        return n / self.seconds

    def sending(self, n: int) -> float:
        return n / self.span


@dataclass
class Crash:
    label: str
    recipients: int
    killed_after: float  # seconds from the start to the kill
    received_at_kill: int
    sending_at_kill: int
    handed_at_kill: int
    takeover: float  # seconds the survivor ran
    twice: int  # recipients who got the message more than once
    extra: int  # messages beyond one per recipient
    missing: int  # recipients who got nothing
    uncertain: int  # deliveries logged uncertain
    unlabelled: int  # recipients who got it twice without an uncertain delivery in the log


@dataclass
class Deployment:
    """A throwaway PostgreSQL server, workspace folders (one per sender, copies of one
    another) around it, and every process started, with what each said."""

    admin: sa.Engine
    base_url: str
    data: Path  # the server's folder (pgtemp)
    work: Path
    folders: list[Path]
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def services(self, url: str) -> Services:
        return build(load_settings(self.folders[0], env=outreach_env(url, 0)))

    def start(self, folder: int, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        said = self.work / f"process-{len(self.started)}.out"
        mine = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}  # none of the caller's
        with said.open("wb") as out:
            process = subprocess.Popen(
                [EXE, "-w", str(self.folders[folder]), "run", "--role", "sender", "--workers", "1", *args],
                env={**mine, **env}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started.append((process, said))
        return process

    def said(self, process: subprocess.Popen[bytes]) -> str:
        return next(path for p, path in self.started if p is process).read_text(errors="replace")

    def stop_all(self) -> None:
        for process, _said in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def outreach_env(url: str, port: int, **extra: str) -> dict[str, str]:
    return {"OUTREACH_DATABASE_URL": url, "OUTREACH_SECRET_KEY": "bench",
            "OUTREACH_SMTP_URL": f"smtp://127.0.0.1:{port}?pool={POOL}", **extra}  # fmt: skip


def contacts_template(d: Deployment, name: str, contacts: int) -> None:
    """A database holding ``contacts`` contacts (the bench's CSV), to copy for each run."""
    csv = make_workspace(d.work / f"csv-{name}", contacts) / "contacts" / "bench.csv"
    services = d.services(d.create(name))
    import_files(services.contacts, [csv])
    services.close()


def fresh_step(d: Deployment, name: str, template: str, expected: int) -> tuple[Services, int]:
    """A copy of ``template`` with a step to everyone in it, materialised."""
    services = d.services(d.create(name, template))
    step = services.outbox.ensure_step(campaign="cop-2014", key=name, channel="email",
                                       template="cop-industry", audience="kind:industry",
                                       send_at=datetime.now(UTC))  # fmt: skip
    if (n := services.outbox.materialize(step)) != expected:
        sys.exit(f"{name}: {n} deliveries materialised, not {expected}")
    return services, step.id


def finish(d: Deployment, process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        sys.exit(f"a sender (pid {process.pid}) was still running after {timeout:.0f} s:\n{d.said(process)}")
    if code != 0:
        sys.exit(f"a sender (pid {process.pid}) stopped with {code}:\n{d.said(process)}")


def sent_by(engine: sa.Engine) -> tuple[list[int], float]:
    """What each process sent (by the deliveries' holders), and the seconds from the
    first claim (a delivery's ``sending`` event) to the last ``sent``."""
    at, event = delivery_events.c.at, delivery_events.c.event
    with engine.connect() as conn:
        shares = conn.execute(sa.select(sa.func.count()).select_from(deliveries).group_by(deliveries.c.holder)).scalars().all()
        first = conn.execute(sa.select(sa.func.min(at)).where(event == "sending")).scalar_one()
        last = conn.execute(sa.select(sa.func.max(at)).where(event == "sent")).scalar_one()
    return sorted(shares, reverse=True), (last - first).total_seconds()


def children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def senders(d: Deployment, count: int, n: int, port: int) -> Run:
    """The step of ``n`` sent by ``count`` sender processes, each in its own folder."""
    services, step_id = fresh_step(d, f"senders{count}", "everyone", n)
    env = outreach_env(d.url(f"senders{count}"), port, **FULL_SPEED)
    os.sync()  # the copy and the materialising go to disk now, not while the senders are timed
    cpu, db_cpu = children_cpu(), server_cpu(d.data)
    start = time.perf_counter()
    processes = [d.start(i, env, "--until-idle") for i in range(count)]
    for process in processes:
        finish(d, process, 300 + n / 20)
    elapsed = time.perf_counter() - start
    cpu, db_cpu = children_cpu() - cpu, server_cpu(d.data) - db_cpu
    counts = services.outbox.counts(step_id=step_id)
    if counts != {"sent": n}:
        sys.exit(f"{count} senders left {counts}")
    run = Run(count, elapsed, cpu, *sent_by(services.engine), db_cpu)
    services.close()
    return run


def crash(d: Deployment, label: str, template: str, n: int, kill_at: int, rate: dict[str, str]) -> Crash:
    """A sender killed with SIGKILL once ``kill_at`` messages have arrived; another
    finishes the step; what the server got, and what the log says."""
    name = "crash_" + label.replace("/", "_").replace(" ", "_")
    services, step_id = fresh_step(d, name, template, n)
    with counting_server() as (server, port):
        env = outreach_env(d.url(name), port, OUTREACH_LEASE_SECONDS="3", **rate)
        start = time.monotonic()
        first = d.start(1, env)
        while server.total() < kill_at and first.poll() is None and time.monotonic() - start < 300:
            time.sleep(0.01)
        if server.total() < kill_at and first.poll() is None:
            sys.exit(f"{label}: {server.total()} messages arrived in 300 s:\n{d.said(first)}")
        if first.poll() is not None:
            sys.exit(f"{label}: the sender stopped by itself ({first.returncode}):\n{d.said(first)}")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_after, received = time.monotonic() - start, server.total()
        with services.engine.connect() as conn:
            left = conn.execute(sa.select(deliveries.c.handed).where(deliveries.c.status == "sending")).all()
        started = time.monotonic()
        finish(d, d.start(2, env, "--until-idle"), 300)
        takeover = time.monotonic() - started
        got = dict(server.got)
    counts = services.outbox.counts(step_id=step_id)
    if counts != {"sent": n}:
        sys.exit(f"{label}: the step was left {counts}")
    uncertain = services.outbox.events(event="uncertain", limit=n + 1)
    services.close()
    twice = {r: c for r, c in got.items() if c > 1}
    labelled = {e["email"] for e in uncertain}
    return Crash(label, n, killed_after, received, len(left), sum(1 for (h,) in left if h), takeover,
                 twice=len(twice), extra=sum(c - 1 for c in twice.values()), missing=n - len(got),
                 uncertain=len(uncertain), unlabelled=len(set(twice) - labelled))  # fmt: skip


def report(n: int, reference: Run, runs: list[Run], crashes: list[Crash], total: float) -> None:
    ref = reference.rate(n)
    one = runs[0].rate(n)
    print()
    print(f"Sending {n:,} personalised emails to smtp-sink (pool={POOL}, rate limit not binding)")
    ref_sending, one_sending = reference.sending(n), runs[0].sending(n)
    print(f"{'':22} {'msgs/s':>7} {'seconds':>7} {'/ SQLite':>8} {'/ 1':>5} | {'sending':>7} {'/ SQLite':>8} "
          f"{'/ 1':>5} | {'CPU s':>5} {'PG CPU':>6}  sent by each")  # fmt: skip
    rows = [("SQLite (reference)", reference)]
    rows += [(f"PostgreSQL, {r.senders} sender{'s' if r.senders > 1 else ''}", r) for r in runs]
    for label, r in rows:
        pg = r is not reference
        print(f"{label:22} {r.rate(n):7,.0f} {r.seconds:7.1f} {r.rate(n) / ref:8.2f} "
              f"{f'{r.rate(n) / one:.2f}' if pg else '':>5} | {r.sending(n):7,.0f} {r.sending(n) / ref_sending:8.2f} "
              f"{f'{r.sending(n) / one_sending:.2f}' if pg else '':>5} | {r.cpu:5.1f} "
              f"{f'{r.db_cpu:.1f}' if pg else '':>6}  {' + '.join(f'{s:,}' for s in r.shares)}")  # fmt: skip
    print("  msgs/s: from the processes' start to their exit; sending: from the first claim to the last message")
    print("  sent; / 1: against one PostgreSQL sender; CPU s: the senders' (and workers'); PG CPU: the server's")
    print()
    print("A sender killed with SIGKILL part-way, another finishing the step (OUTREACH_LEASE_SECONDS=3)")
    print(f"{'':12} {'recipients':>10} {'kill at':>8} {'arrived':>8} {'sending':>8} {'handed':>7} "
          f"{'take-over':>9} {'twice':>6} {'extra':>6} {'missing':>8} {'uncertain':>9} {'unlabelled':>10} "
          f"{'target':>7}")  # fmt: skip
    for c in crashes:
        target = CRASH_TARGETS[c.label]
        verdict = "ok" if c.twice <= target and not c.missing and not c.unlabelled else "MISSED"
        print(f"{c.label:12} {c.recipients:10,} {c.killed_after:7.1f}s {c.received_at_kill:8,} "
              f"{c.sending_at_kill:8,} {c.handed_at_kill:7,} {c.takeover:8.1f}s {c.twice:6,} {c.extra:6,} "
              f"{c.missing:8,} {c.uncertain:9,} {c.unlabelled:10,} {f'<= {target}':>7} {verdict}")  # fmt: skip
    print("  sending/handed: rows still 'sending' (of them 'handed') at the kill; twice: recipients who got it")
    print("  more than once (extra: messages beyond one each); uncertain: deliveries logged 'uncertain';")
    print("  unlabelled: recipients who got it twice with no such entry")
    print(f"\ntotal run time {total:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000, help="the step's recipients (default 20,000)")
    parser.add_argument("--crash-contacts", type=int, default=1_000,
                        help="recipients of the step killed at the default rate (default 1,000)")  # fmt: skip
    args = parser.parse_args()
    n, small = args.contacts, args.crash_contacts
    full = max(1_000, n // 4)
    sink = need("smtp-sink")
    bindir = pg_bin()
    if bindir is None:
        sys.exit("the PostgreSQL server binaries are needed (pg_ctl, initdb): apt-get install postgresql")
    began = time.perf_counter()
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    work = Path(tempfile.mkdtemp(prefix="outreach-scale-"))
    sink_proc = subprocess.Popen([sink, *user, "-c", f"127.0.0.1:{port}", "2000"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deployment: Deployment | None = None
    try:
        time.sleep(0.3)
        print(f"SQLite: one outreach run, {n:,} emails ...", end=" ", flush=True)
        ws, cpu = make_workspace(work / "sqlite", n), children_cpu()
        seconds, _rss, _tree = outreach_step(ws, port, n)
        cpu = children_cpu() - cpu
        services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "bench"}))
        reference = Run(1, seconds, cpu, *sent_by(services.engine))
        services.close()
        print(f"{reference.rate(n):,.0f} msgs/s", flush=True)
        with postgres_server(bindir) as server:
            admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
            first = make_workspace(work / "folder0", 0)
            folders = [first]
            for i in range(1, max(SENDERS)):
                shutil.copytree(first, work / f"folder{i}" / "ws")
                folders.append(work / f"folder{i}" / "ws")
            deployment = d = Deployment(admin, server.url.rsplit("/", 1)[0], server.data, work, folders)
            try:
                for name, size in (("everyone", n), ("few", small), ("quarter", full)):
                    contacts_template(d, name, size)
                runs = []
                for count in SENDERS:
                    print(f"PostgreSQL: {count} sender(s), {n:,} emails ...", end=" ", flush=True)
                    runs.append(senders(d, count, n, port))
                    print(f"{runs[-1].rate(n):,.0f} msgs/s", flush=True)
                crashes = []
                for label, template, size, kill_at, rate in (
                    ("50/s", "few", small, max(1, min(250, small // 3)), {}),
                    ("full speed", "quarter", full, full // 3, FULL_SPEED),
                ):
                    print(f"PostgreSQL: a sender killed at {label}, {size:,} emails ...", end=" ", flush=True)
                    crashes.append(crash(d, label, template, size, kill_at, rate))
                    print(f"{crashes[-1].twice} recipients got it twice", flush=True)
            finally:
                d.stop_all()
                admin.dispose()
        report(n, reference, runs, crashes, time.perf_counter() - began)
        usual = ("sending through ", "posting: ")  # what every sender says when it starts
        other = [(p.pid, line) for p, _ in d.started for line in d.said(p).splitlines()
                 if line.strip() and not line.startswith(usual)]  # fmt: skip
        print(f"the {len(d.started)} sender processes said {len(other)} line(s) beyond their start")
        for pid, line in other[:20]:
            print(f"  pid {pid}: {line}")
    finally:
        if deployment is not None:
            deployment.stop_all()
        sink_proc.terminate()
        sink_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
