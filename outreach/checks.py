"""The plan check: fields, templates (rendered for a sample of their audiences),
audiences, the sender, the embargo in every time zone, waves reached twice, and X
posting volume. ``outreach plan check`` prints it; ``schedule``, ``reschedule`` and
``rehearse`` refuse a plan that has errors (see ``guards.require_clean``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta

from outreach.app import Services
from outreach.domain import audience as seg
from outreach.domain import channels
from outreach.domain.errors import OutreachError
from outreach.domain.plan import Plan
from outreach.domain.sender import sender_problem
from outreach.domain.timeline import Timeline, audience_of
from outreach.posting import X_LIMITS, render_posts
from outreach.scheduling import plan_timeline
from outreach.templating import check_templates

# X's posting limits for one account (posts, including replies in a thread).
X_PER_15_MIN, X_PER_DAY = (limit.count for limit in X_LIMITS)  # what the poster holds to


@dataclass
class PlanReport:
    plan: Plan
    timeline: Timeline
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    x_usage: str = ""


def audience_size(services: Services, expr: str) -> int:
    return services.contacts.count(seg.and_(seg.parse(expr), seg.Term("status", ("active",))))


def check_plan(services: Services, plan: Plan, *, sample: int | None = None) -> PlanReport:
    """Everything that can be known about the plan before it fires; ``sample`` renders
    each email for at most that many of its audience."""
    line = plan_timeline(services, plan)
    report = PlanReport(plan, line)
    errors, warnings = report.errors, report.warnings
    for breach in line.breaches:
        errors.append(
            f"{breach} (make it later, or add 'not_before: embargo' to hold those groups until then)"
        )
    if any(s.channel in ("email", channels.REPORT.name) for s in plan.steps):  # a report is mailed too
        problem = sender_problem(services.settings.sender or plan.campaign.sender)
        if problem:
            errors.append(f"campaign.from: {problem}")
    links = services.links
    for step in plan.steps:
        if not channels.channel(step.channel).templated:
            continue  # no template, no audience: its addresses were checked with the plan's fields
        kind = channels.channel(step.channel).template_kind
        try:
            services.templates.variants(step.template, kind)
        except OutreachError as exc:
            errors.append(f"steps[{step.id}]: {exc.message}")
            continue
        if not channels.channel(step.channel).per_contact:
            found = check_templates(
                services.templates, plan.campaign, [], names=[f"{step.template}.{kind}"]
            )
        else:
            firings = [f for f in line.firings if f.step.id == step.id]
            sizes = [audience_size(services, f.audience) for f in firings]
            if not firings or sum(sizes) == 0:
                errors.append(f"steps[{step.id}]: the audience '{step.audience}' has no active contact")
                continue
            people = itertools.chain.from_iterable(
                services.contacts.iterate(seg.parse(f.audience)) for f in firings
            )
            if sample is not None:
                people = itertools.islice(people, sample)
            found = check_templates(
                services.templates, plan.campaign, people, names=[f"{step.template}.email"],
                urls_for=lambda c, key=step.id: links.for_contact(plan.campaign.id, key, c.id),
            )  # fmt: skip
        for finding in found.findings:
            (errors if finding.level == "error" else warnings).append(f"steps[{step.id}]: {finding}")
    warnings += _twice(services, plan)
    report.x_usage, x_warnings = _x_volume(services, plan, line)
    warnings += x_warnings
    return report


def _twice(services: Services, plan: Plan) -> list[str]:
    """An email step that applies to several waves reaches a contact in each wave whose
    audience has them: the launch wave has no restriction, so a national wave's
    contacts are in it too unless the step's audience leaves them out."""
    out = []
    for step in plan.steps:
        if step.channel != "email":
            continue
        waves = [w for w in plan.waves if step.waves is None or w.id in step.waves]
        for i, first in enumerate(waves):
            for second in waves[i + 1 :]:
                both = seg.and_(seg.parse(audience_of(step, first) or "status:active"),
                                seg.parse(audience_of(step, second) or "status:active"),
                                seg.Term("status", ("active",)))  # fmt: skip
                n = services.contacts.count(both)
                if n:
                    out.append(f"steps[{step.id}]: {n:,} contact(s) are in the audience of both the "
                               f"{first.id} and the {second.id} wave and would get it twice; limit the "
                               f"step's waves, or leave the {second.id} wave's contacts out of its audience")  # fmt: skip
    return out


def _x_volume(services: Services, plan: Plan, line: Timeline) -> tuple[str, list[str]]:
    """The plan's X usage: (a summary line, warnings where it passes a posting limit)."""
    from twitter_text import extract_urls

    posts: list[tuple] = []  # (instant, step id, has a URL)
    for firing in line.firings:
        if firing.step.channel != "x":
            continue
        try:
            rendered = render_posts(services.templates, plan.campaign, firing.step.template)
        except OutreachError:
            rendered = []  # the template check reports it
        posts += [(firing.at, firing.step.id, bool(extract_urls(p.text))) for p in rendered] or [(firing.at, firing.step.id, False)]
    if not posts:
        return "", []
    windows = [(at, step_id, sum(1 for t, _s, _u in posts if at <= t < at + timedelta(minutes=15)),
                sum(1 for t, _s, _u in posts if at <= t < at + timedelta(days=1))) for at, step_id, _u in posts]  # fmt: skip
    peak15 = max(windows, key=lambda w: w[2])
    peak_day = max(windows, key=lambda w: w[3])
    with_url = sum(1 for *_x, url in posts if url)
    summary = (f"X usage: {len(posts)} post(s), {with_url} with a URL; at most {peak15[2]} in 15 minutes "
               f"and {peak_day[3]} in 24 hours (limits: {X_PER_15_MIN} per 15 minutes, {X_PER_DAY:,} per day)")  # fmt: skip
    out = []
    if peak15[2] > X_PER_15_MIN:
        out.append(f"X: {peak15[2]} posts in the 15 minutes from {peak15[0]:%Y-%m-%d %H:%M} UTC "
                   f"(steps around {peak15[1]}); X allows {X_PER_15_MIN}: the rest wait for X's reset")  # fmt: skip
    if peak_day[3] > X_PER_DAY:
        out.append(f"X: {peak_day[3]} posts in the day from {peak_day[0]:%Y-%m-%d %H:%M} UTC; "
                   f"X allows {X_PER_DAY:,} a day")  # fmt: skip
    return summary, out


SCHEDULE_SAMPLE = 200  # contacts each email is rendered for when a plan is scheduled


def errors_of(services: Services, *, sample: int | None = SCHEDULE_SAMPLE):  # type: ignore[no-untyped-def]
    """The check that ``schedule``, ``reschedule`` and ``rehearse`` apply: a plan's
    errors (each email rendered for a sample of its audience)."""

    def check(plan: Plan) -> list[str]:
        return check_plan(services, plan, sample=sample).errors

    return check
