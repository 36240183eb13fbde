"""Planning speed: a plan of 20 steps over 50,000 contacts in 300 time zones —
``plan check`` (without rendering every email) plus ``schedule`` — and the CPU an
idle ``outreach run`` uses.

Run: make bench   (or .venv/bin/python bench/plan.py)
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import available_timezones

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from outreach.app import build  # noqa: E402
from outreach.config import load_settings  # noqa: E402
from outreach.imports import import_files  # noqa: E402
from outreach.plans import load  # noqa: E402
from outreach.scheduling import plan_timeline, schedule  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="outreach-plan-"))
    try:
        ws = work / "ws"
        for name in ("templates",):
            shutil.copytree(ROOT / name, ws / name)
        (ws / "contacts").mkdir()
        (ws / "schedules").mkdir()
        rng = random.Random(5)
        zones = sorted(
            z
            for z in available_timezones()
            if "/" in z and not z.startswith(("Etc/", "posix/", "right/", "SystemV/"))
        )[:300]
        kinds = ["industry", "partner", "media", "government", "civil-society"]
        lines = ["email,name,kind,timezone"]
        for i in range(50_000):
            lines.append(
                f"p{i}@org{i % 700}.example.org,Person {i},{kinds[i % 5]},{rng.choice(zones)}"
            )
        (ws / "contacts" / "c.csv").write_text("\n".join(lines) + "\n")
        steps = []
        for i in range(20):
            local = i % 2 == 0
            steps.append({
                "id": f"step-{i}", "channel": "email", "template": "cop-industry",
                "audience": f"kind:{kinds[i % 5]}", "at": f"T+{i}d 09:00" + (" local" if local else ""),
                "public": True, "not_before": "embargo",
            })  # fmt: skip
        plan = {
            "campaign": {"id": "bench", "name": "Bench", "from": "team@example.org"},
            "launch": "2014-09-05 10:00 Europe/Istanbul",
            "links": {"guidelines": "https://example.org/g", "pledge": "https://example.org/p"},
            "steps": steps,
        }
        path = ws / "schedules" / "bench.yaml"
        path.write_text(yaml.safe_dump(plan, sort_keys=False))
        env = {"OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "b"}
        services = build(load_settings(ws, env=env))
        import_files(services.contacts, [ws / "contacts" / "c.csv"])

        start = time.perf_counter()
        parsed = load(path)
        line = plan_timeline(services, parsed)
        checked = time.perf_counter() - start
        start = time.perf_counter()
        report = schedule(services, path)
        scheduled = time.perf_counter() - start
        services.close()
        print(f"20 steps, 50,000 contacts, {len(zones)} zones -> {len(line.firings):,} firings")
        print(f"plan check (schema, timeline, embargo)  {checked:6.2f} s")
        print(f"schedule ({report.added:,} jobs stored)        {scheduled:6.2f} s")
        print(
            f"together                                {checked + scheduled:6.2f} s   (target < 2 s)"
        )

        exe = str(Path(sys.executable).with_name("outreach"))
        start = time.perf_counter()
        subprocess.run([exe, "-w", str(ws), "plan", "check", str(path), "--sample", "50"],
                       env={**os.environ, **env}, stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        print(
            f"outreach plan check --sample 50 (CLI, templates rendered, process start-up)  {time.perf_counter() - start:6.2f} s"
        )
        proc = subprocess.Popen([exe, "-w", str(ws), "run"], env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(5)  # start-up
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before, t0 = cpu(), time.monotonic()
        time.sleep(20)
        used = (cpu() - before) / (time.monotonic() - t0)
        proc.terminate()
        proc.wait()
        print(
            f"idle outreach run                       {used * 100:6.2f} % of a core   (target < 1 %)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
