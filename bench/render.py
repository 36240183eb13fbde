"""Rendering speed: personalised emails (subject + text + HTML, about 4 KB) for
20,000 contacts through outreach's compiled email template, against a bare
``jinja2.Template.render`` of the same template with the same data, in one run.

outreach's path adds the sandbox, HTML escaping, header cleaning and (once per
template) CSS inlining; the bare one renders the file as it is.

Run: make bench   (or .venv/bin/python bench/render.py [--contacts N])
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import jinja2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outreach.domain.campaign import CampaignInfo, parse_launch
from outreach.domain.contact import Contact
from outreach.templating import TemplateLibrary, render_values

HERE = Path(__file__).resolve().parent
CAMPAIGN = CampaignInfo(
    "cop-2014",
    "Guidelines for Industry on Child Online Protection",
    parse_launch("2014-09-05 10:00 Europe/Istanbul"),
    {"guidelines": "https://www.example.org/cop/guidelines-2014",
     "press": "https://www.example.org/cop/newsroom", "pledge": "https://www.example.org/cop/pledge",
     "checklist": "https://www.example.org/cop/checklists"},
)  # fmt: skip
SECTORS = ["mobile operator", "ISP", "content provider", "device maker", "broadcaster"]


def contacts(n: int) -> list[Contact]:
    now = datetime.now(UTC)
    return [
        Contact(i, f"person{i}@org{i % 500}.example.org", f"Person Number {i}", f"Organisation {i % 500}",
                "industry", SECTORS[i % 5], "FJ", "en", "Pacific/Fiji", None, "active",
                ("cop-2014",), {"membership": "itu-sector"}, now, now)
        for i in range(n)
    ]  # fmt: skip


def best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    people = contacts(args.contacts)
    urls = {"unsubscribe_url": "https://127.0.0.1:8000/u/cop-2014/1/abcdefghijklmnopqrstuvwx",
            "view_in_browser_url": "https://127.0.0.1:8000/v/cop-2014/s/1/abcdefghijklmnopqrstuvwx"}  # fmt: skip
    values = [render_values(CAMPAIGN, contact=c, urls=urls) for c in people]

    library = TemplateLibrary(HERE / "templates")
    compile_start = time.perf_counter()
    _kind, variants = library.variants("bench")
    template = library.compile(variants[None])
    compile_time = time.perf_counter() - compile_start
    sample = template.render(values[0])  # type: ignore[union-attr]
    size = len(sample.subject) + len(sample.text) + len(sample.html or "")

    # A plain (unsandboxed, unescaped) environment with the same filters and
    # whitespace rules: jinja2.Template.render of the same source.
    plain = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    plain.filters.update(library.text_env.filters)
    bare = plain.from_string((HERE / "templates" / "bench.email.j2").read_text("utf-8"))
    bare_size = len(bare.render(values[0]))

    def ours() -> None:
        for v in values:
            template.render(v)  # type: ignore[union-attr]

    def reference() -> None:
        for v in values:
            bare.render(v)

    def ours_with_values() -> None:
        for c in people:
            template.render(render_values(CAMPAIGN, contact=c, urls=urls))  # type: ignore[union-attr]

    n = len(values)
    ref_best, ref_median = best_of(args.runs, reference)
    our_best, our_median = best_of(args.runs, ours)
    full_best, _ = best_of(args.runs, ours_with_values)
    print(f"{n:,} personalised emails, {size:,} characters each (subject + text + inlined HTML);")
    print(
        f"the bare render produces {bare_size:,} characters (no inlined styles). Best of {args.runs} runs, one core."
    )
    print()
    print(f"compile (once per step, CSS inlined here)   {compile_time * 1000:8.1f} ms")
    print(
        f"bare jinja2.Template.render (reference)     {n / ref_best:8,.0f} renders/s   (median {n / ref_median:,.0f})"
    )
    print(
        f"outreach EmailTemplate.render               {n / our_best:8,.0f} renders/s   (median {n / our_median:,.0f})   target >= 10,000"
    )
    print(
        f"ratio outreach / bare                       {ref_best / our_best:8.2f}                 target >= 0.5"
    )
    print(f"outreach, building each recipient's values  {n / full_best:8,.0f} renders/s")


if __name__ == "__main__":
    main()
