"""Import speed: `outreach contacts import` of 1,000,000 generated contacts against the
sqlite3 shell's `.import` of the same CSV into a bare table, measured in the same run.

Prints rows/s for both, their ratio, the import's peak RSS (main process and the
whole process tree with its validation workers), and how long segment counts take
on the 1M-contact store; then the same file imported again into that store (every
row meets a stored address: lookups, merges, and what the run keeps to report
repeated addresses), its rows/s and peak RSS. Then, where the PostgreSQL binaries
are installed, the same file into a throwaway PostgreSQL server (tools/pgtemp.py):
psql's \\copy into a bare table (the reference) against the import into a database
with outreach's schema, each into a fresh database, timed in the same run
(``--pg-runs`` times, with the ratio of each run); the server's CPU time during the
import; then the same file again into that store (every row meets a stored address).
Neither side's schema is timed: the reference's CREATE TABLE and outreach's
migrations run before the clock starts.

Run: make bench   (or .venv/bin/python bench/import_contacts.py [--rows N] [--no-postgres]
     [--postgres-only] [--pg-runs N])
Needs the sqlite3 command-line shell (Debian package sqlite3) for the SQLite part.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COUNTRIES = [
    "FJ",
    "WS",
    "TO",
    "VU",
    "SB",
    "PG",
    "KI",
    "CK",
    "NU",
    "TV",
    "TR",
    "CH",
    "US",
    "GB",
    "FR",
    "DE",
    "ES",
    "IT",
    "BR",
    "MX",
    "IN",
    "CN",
    "JP",
    "KR",
    "ZA",
    "NG",
    "KE",
    "EG",
    "AE",
    "SA",
    "RU",
    "CA",
    "AU",
    "NZ",
    "SG",
    "MY",
    "ID",
    "PH",
    "TH",
    "SE",
]
KINDS = ["industry"] * 6 + ["partner", "media", "government", "civil-society", "academia"]
SECTORS = ["mobile operator", "ISP", "content provider", "device maker", "broadcaster"]
LANGS = ["en", "fr", "es", "tr", "sm", "to", "pt-BR", "ar", "zh"]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(1)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name,organization,kind,sector,country,language,tags,membership\n")
        lines = []
        for i in range(rows):
            country = rng.choice(COUNTRIES)
            lines.append(
                f"person{i}@org{i % 5000}.example.org,Person Number {i},Organisation {i % 5000},"
                f"{rng.choice(KINDS)},{rng.choice(SECTORS)},{country},{rng.choice(LANGS)},"
                f'"cop-2014, batch-{i % 7}",itu-sector\n'
            )
            if len(lines) >= 10000:
                handle.writelines(lines)
                lines = []
        handle.writelines(lines)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def tree_rss(pid: int) -> tuple[int, int]:
    """(peak RSS of pid as the kernel keeps it, current RSS of pid and its descendants),
    in bytes. Reads only the process tree, so sampling stays light beside the import."""
    peak = 0
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        statm = _read(f"/proc/{p}/statm").split()
        total += int(statm[1]) * page if len(statm) > 1 else 0
        for task in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else ():
            stack += [int(c) for c in _read(f"/proc/{p}/task/{task}/children").split()]
    return peak, total


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    # the previous step's writes go to disk now, not while this command is measured
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peaks = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            main, tree = tree_rss(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], main), max(peaks[1], tree)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out}")
    return elapsed, peaks[0], peaks[1], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--no-postgres", dest="postgres", action="store_false",
        help="skip the PostgreSQL part (it runs when pg_ctl and psql are found)",
    )  # fmt: skip
    parser.add_argument("--postgres-only", action="store_true", help="skip the SQLite part")
    parser.add_argument("--pg-runs", type=int, default=1,
                        help="PostgreSQL: reference and import this many times")  # fmt: skip
    args = parser.parse_args()
    outreach = str(Path(sys.executable).with_name("outreach"))
    work = Path(tempfile.mkdtemp(prefix="outreach-bench-"))
    try:
        csv_path = work / "contacts.csv"
        t = time.perf_counter()
        generate(csv_path, args.rows)
        print(
            f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s"
        )
        if not args.postgres_only:
            sqlite(csv_path, args.rows, outreach, work)
        if args.postgres or args.postgres_only:
            postgres(csv_path, args.rows, outreach, work, args.pg_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sqlite(csv_path: Path, rows: int, outreach: str, work: Path) -> None:
    """The file into SQLite: the sqlite3 shell's .import (reference) against the import,
    segment counts on the store, then the same file again."""
    sqlite3_shell = shutil.which("sqlite3")
    if not sqlite3_shell:
        sys.exit("the sqlite3 shell is needed: apt-get install sqlite3")
    ref_db = work / "reference.db"
    ref_cmd = [sqlite3_shell, str(ref_db), ".mode csv", f".import {csv_path} contacts"]
    ref_time, _, _, _ = run_measured(ref_cmd, dict(os.environ))
    ref_rate = rows / ref_time

    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_WORKSPACE": str(work / "ws")}
    (work / "ws" / "contacts").mkdir(parents=True)
    imp_time, main_rss, tree_peak, out = run_measured(
        [outreach, "contacts", "import", str(csv_path)], env
    )
    imp_rate = rows / imp_time
    if f"{rows:,}" not in out:
        sys.exit(f"the import did not insert every row:\n{out}")

    # A segment count on the full store, in-process (the query, not Python's start-up).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from outreach.app import build
    from outreach.config import load_settings
    from outreach.domain.audience import parse

    services = build(load_settings(work / "ws", env={}))

    def timed_count(text: str) -> tuple[float, int]:
        expr = parse(text)
        services.contacts.count(expr)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            n = services.contacts.count(expr)
            times.append(time.perf_counter() - t)
        return statistics.median(times), n

    segment, n = timed_count("kind:industry country:FJ")
    tag_counts = {
        text: timed_count(text)
        for text in ("tag:batch-3", "-tag:batch-3", "country:FJ kind:industry -tag:batch-3")
    }
    services.close()
    cli_time, _, _, _ = run_measured(
        [outreach, "contacts", "count", "--where", "kind:industry country:FJ"], env
    )
    again_time, again_rss, again_tree, out = run_measured(
        [outreach, "contacts", "import", str(csv_path)], env
    )
    if "met again" in out:
        sys.exit(f"the second import reported repeats within its run:\n{out}")

    print()
    print(f"sqlite3 .import (reference)     {ref_rate:>10,.0f} rows/s   {ref_time:6.2f} s")
    print(
        f"outreach contacts import        {imp_rate:>10,.0f} rows/s   {imp_time:6.2f} s   (full validation)"
    )
    print(
        f"ratio outreach / .import        {imp_rate / ref_rate:>10.3f}             (target >= 0.15)"
    )
    print(
        f"peak RSS, import process        {main_rss / 2**20:>10.0f} MB            (target < 200 MB)"
    )
    print(f"peak RSS, with its workers      {tree_peak / 2**20:>10.0f} MB")
    print(
        f"count kind:industry country:FJ  {segment * 1000:>10.1f} ms   = {n:,} contacts (median of 20; target < 50 ms)"
    )
    print(
        f"  the same through the CLI      {cli_time * 1000:>10.0f} ms            (including Python start-up)"
    )
    for text, (took, found) in tag_counts.items():
        print(f"count {text}: {took * 1000:.1f} ms = {found:,} contacts (median of 20)")
    print(
        f"import again (all stored)       {rows / again_time:>10,.0f} rows/s   "
        f"{again_time:6.2f} s"
    )
    print(
        f"peak RSS, import again          {again_rss / 2**20:>10.0f} MB            "
        f"(with its workers {again_tree / 2**20:.0f} MB)"
    )


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes and of their children that have ended."""
    ticks = 0
    for pid in pids:
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
        if len(fields) > 14:
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(data: Path) -> float:
    """CPU time of a PostgreSQL server so far: its postmaster (with the sessions that
    have ended) and its live processes."""
    pids = [int(_read(str(data / "db" / "postmaster.pid")).split()[0])]
    pids += [int(p) for p in _read(f"/proc/{pids[0]}/task/{pids[0]}/children").split()]
    return cpu_seconds(pids)


def postgres(csv_path: Path, rows: int, outreach: str, work: Path, runs: int) -> None:
    """The same file into PostgreSQL: psql's \\copy into a bare table (reference)
    against the import, on one throwaway server on 127.0.0.1, ``runs`` times, each
    into fresh databases; then the file again into the last run's store."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tools.pgtemp import pg_bin, postgres_server

    bindir = pg_bin()
    psql = shutil.which("psql") or (str(bindir / "psql") if bindir else None)
    if bindir is None or psql is None:
        print("\nPostgreSQL: skipped (no pg_ctl and psql here)")
        return
    results = []
    with postgres_server(bindir) as server:
        base = server.url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
        columns = ", ".join(f"c{i} text" for i in range(9))
        copy = f"\\copy contacts FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"
        for run in range(runs):
            ref_db, db, ws = f"reference{run}", f"outreach{run}", work / f"ws-pg{run}"
            for name in (ref_db, db):
                subprocess.run([psql, f"{base}/postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
            subprocess.run([psql, f"{base}/{ref_db}", "-qc", f"CREATE TABLE contacts ({columns})"],
                           check=True)  # fmt: skip
            ref_time, _, _, _ = run_measured([psql, f"{base}/{ref_db}", "-qc", copy], dict(os.environ))
            env = {**os.environ, "OUTREACH_WORKSPACE": str(ws),
                   "OUTREACH_DATABASE_URL": f"{base}/{db}"}  # fmt: skip
            ws.mkdir()
            run_measured([outreach, "contacts", "count"], env)  # the schema, untimed
            cpu = server_cpu(server.data)
            imp_time, main_rss, tree_rss_peak, out = run_measured(
                [outreach, "contacts", "import", str(csv_path)], env
            )
            cpu = server_cpu(server.data) - cpu
            if f"{rows:,}" not in out:
                sys.exit(f"the PostgreSQL import did not insert every row:\n{out}")
            results.append((ref_time, imp_time, main_rss, tree_rss_peak, cpu))
            print(f"PostgreSQL run {run + 1}: \\copy {rows / ref_time:,.0f} rows/s, import "
                  f"{rows / imp_time:,.0f} rows/s, ratio {ref_time / imp_time:.3f}", flush=True)  # fmt: skip
        cpu = server_cpu(server.data)
        again_time, again_rss, _, out = run_measured([outreach, "contacts", "import", str(csv_path)], env)
        again_cpu = server_cpu(server.data) - cpu
        if "met again" in out or not any("unchanged" in line and f"{rows:,}" in line
                                         for line in out.splitlines()):  # fmt: skip
            sys.exit(f"the PostgreSQL import again did not find every row unchanged:\n{out}")
    ratios = sorted(r / i for r, i, *_ in results)
    ref_time, imp_time, main_rss, tree_rss_peak, cpu = results[-1]
    print()
    print(f"PostgreSQL: psql \\copy (reference)  {rows / ref_time:>10,.0f} rows/s   {ref_time:6.2f} s")
    print(f"outreach contacts import        {rows / imp_time:>10,.0f} rows/s   {imp_time:6.2f} s   (full validation)")
    print(f"ratio outreach / \\copy          {ratios[len(ratios) // 2]:>10.3f}             (target >= 0.10; "
          f"median of {len(ratios)} runs: {', '.join(f'{r:.3f}' for r in ratios)})")  # fmt: skip
    print(f"server CPU during the import    {cpu:>10.1f} s")
    print(f"peak RSS, import process        {main_rss / 2**20:>10.0f} MB")
    print(f"peak RSS, with its workers      {tree_rss_peak / 2**20:>10.0f} MB")
    print(f"import again (all stored)       {rows / again_time:>10,.0f} rows/s   {again_time:6.2f} s   "
          f"(server CPU {again_cpu:.1f} s, peak RSS {again_rss / 2**20:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
