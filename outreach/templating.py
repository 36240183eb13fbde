"""The workspace's ``templates/`` folder: which templates exist, which language
variant a contact gets, compiled once and rendered per recipient; and the checks
behind ``outreach templates check`` and ``outreach preview``."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import DictLoader

from outreach.confined import WorkspaceLoader, check_inside
from outreach.domain import channels
from outreach.domain.campaign import CampaignInfo
from outreach.domain.contact import FIELDS, Contact, normalize_language
from outreach.domain.errors import ContactValueError, OutreachError, TemplateError
from outreach.domain.render import (
    X_MAX_WEIGHTED,
    Compiled,
    EmailTemplate,
    PressTemplate,
    XPost,
    XTemplate,
)
from outreach.domain.sandbox import make_environments, text_direction

_kinds = channels.template_kinds  # the registry's, read each time (a channel may be added)


@dataclass(frozen=True)
class TemplateFile:
    name: str  # e.g. cop-industry
    kind: str  # email | x | press
    lang: str | None  # None: the default variant
    rel: str  # path inside templates/, the loader's name for it

    @property
    def label(self) -> str:
        return f"{self.name}.{self.kind}" + (f" [{self.lang}]" if self.lang else "")


def language_chain(lang: str | None) -> list[str]:
    """fr-CA -> [fr-ca, fr]: the variants to try, most specific first."""
    if not lang:
        return []
    parts = lang.lower().split("-")
    return ["-".join(parts[:i]) for i in range(len(parts), 0, -1)]


def variant_language(file: TemplateFile, campaign: CampaignInfo) -> str:
    """The language a message made from ``file`` is written in: the variant's own, or
    the campaign's for the default variant. Its ``lang``, ``dir``, dates and numbers
    follow it, whatever the contact's language: a contact whose language has no
    variant gets a message wholly in the language of the one they fall back to."""
    return file.lang or campaign.language


class TemplateLibrary:
    """The templates of ``root`` (the workspace's ``templates/``), or with ``sources``
    the templates a campaign was scheduled with ({path inside templates/: source}):
    what was approved is what is rendered, whatever the files say now."""

    def __init__(self, root: Path, media: Path | None = None, *,
                 sources: dict[str, str] | None = None) -> None:  # fmt: skip
        self.root = root
        self.workspace = root.parent  # what a file may lead to, through a link
        self.media = media if media is not None else root.parent / "media"  # images for X posts
        self.sources = sources
        loader = DictLoader(sources) if sources is not None else WorkspaceLoader(root, self.workspace)
        self.text_env, self.html_env = make_environments(loader)
        self._compiled: dict[str, Compiled] = {}
        self._files: list[TemplateFile] | None = None
        self.problems: list[str] = []  # files that are not named like templates

    def files(self) -> list[TemplateFile]:
        if self._files is None:
            self._files = []
            if self.sources is not None:
                names = sorted(n for n in self.sources if "/" not in n and n.endswith(".j2"))
            else:
                names = [p.name for p in sorted(self.root.glob("*.j2"))] if self.root.is_dir() else []
            for name in names:
                parsed = self._parse_name(name)
                if parsed:
                    self._files.append(parsed)
        return self._files

    def _parse_name(self, filename: str) -> TemplateFile | None:
        parts = filename.split(".")
        if filename.startswith("_"):
            return None
        if len(parts) == 3 and parts[1] in _kinds():
            return TemplateFile(parts[0], parts[1], None, filename)
        if len(parts) == 4 and parts[2] in _kinds():
            try:
                lang = normalize_language(parts[1])
            except ContactValueError:
                self.problems.append(f"{filename}: {parts[1]!r} is not a language tag")
                return None
            return TemplateFile(parts[0], parts[2], lang, filename)
        self.problems.append(
            f"{filename}: not a template name; use "
            + ", ".join(f"NAME.{k}.j2" for k in _kinds()) + " or NAME.LANG.email.j2"
        )
        return None

    def names(self) -> list[tuple[str, str]]:
        return sorted({(f.name, f.kind) for f in self.files()})

    def variants(
        self, name: str, kind: str | None = None
    ) -> tuple[str, dict[str | None, TemplateFile]]:
        """(kind, {lang: file}) for ``name`` (``NAME`` or ``NAME.KIND``)."""
        if kind is None and "." in name and name.rsplit(".", 1)[1] in _kinds():
            name, kind = name.rsplit(".", 1)
        found = [f for f in self.files() if f.name == name and (kind is None or f.kind == kind)]
        kinds = sorted({f.kind for f in found})
        if not found:
            known = sorted({f.name for f in self.files()})
            close = difflib.get_close_matches(name, known, n=3)
            raise OutreachError(
                f"no template named {name!r}" + (f" of kind {kind}" if kind else "")
                + f" in {self.root}",
                hint=f"did you mean {', '.join(close)}?" if close else f"templates: {', '.join(known) or 'none'}",
            )  # fmt: skip
        if len(kinds) > 1:
            raise OutreachError(
                f"{name!r} is a template of several kinds ({', '.join(kinds)})",
                hint=f"say which: {', '.join(f'{name}.{k}' for k in kinds)}",
            )
        return kinds[0], {f.lang: f for f in found}

    def pick(self, variants: dict[str | None, TemplateFile], lang: str | None) -> TemplateFile:
        lowered = {(k.lower() if k else None): v for k, v in variants.items()}
        for candidate in language_chain(lang):
            if candidate in lowered:
                return lowered[candidate]
        if None in variants:
            return variants[None]
        return sorted(variants.values(), key=lambda f: f.lang or "")[0]

    def missing_images(self, posts: Iterable[XPost], template: str | None = None) -> list[str]:
        """The images ``posts`` attach that are not files in the media folder; a
        ``TemplateError`` (naming ``template``) for one that is a link leading outside
        the workspace."""
        missing = []
        for image in (i for p in posts for i in p.images):
            path = self.media / image.path
            check_inside(path, self.workspace, template=template)
            if not path.is_file():
                missing.append(image.path)
        return missing

    def compile(self, file: TemplateFile) -> Compiled:
        if file.rel not in self._compiled:
            text, html, rel = self.text_env, self.html_env, file.rel
            self._compiled[rel] = (XTemplate(text, rel) if file.kind == "x" else EmailTemplate(text, html, rel)
                                   if file.kind == "email" else PressTemplate(text, html, rel))  # fmt: skip
        return self._compiled[file.rel]


def contact_values(contact: Contact) -> dict[str, Any]:
    """What ``contact`` is in a template: fields that have a value, tags, attributes.
    A field with no value is absent, so using it without ``default`` is an error."""
    values: dict[str, Any] = {f: getattr(contact, f) for f in FIELDS if f != "tags"}
    values = {k: v for k, v in values.items() if v is not None}
    values["tags"] = list(contact.tags)
    values["attrs"] = dict(contact.attrs)
    return values


def render_values(
    campaign: CampaignInfo,
    *,
    contact: Contact | None = None,
    step: dict[str, Any] | None = None,
    urls: dict[str, str] | None = None,
    lang: str | None = None,
) -> dict[str, Any]:
    """What a template sees. ``lang`` is the language of the variant being rendered
    (``variant_language``): pass it whenever a variant was picked, or a contact
    without a variant in their language gets the fallback's text with their own
    language's ``lang``, ``dir``, dates and numbers. Without it: the contact's
    language, else the campaign's."""
    language = lang or (contact.language if contact else None) or campaign.language
    values: dict[str, Any] = {
        "campaign": campaign.context(contact.timezone if contact else None),
        "step": step or {},
        "lang": language,
        "dir": text_direction(language),
    }
    if contact is not None:
        values["contact"] = contact_values(contact)
    values.update(urls or {})
    return values


def missing_image_message(path: str, media: Path) -> str:
    return f"image {path!r} is not in the media folder ({media / path} does not exist)"


# -- templates check -------------------------------------------------------------


@dataclass
class Finding:
    level: str  # error | warning
    template: str  # file name inside templates/ (or a template's name)
    message: str
    line: int | None = None
    contact: str | None = None
    count: int = 1

    def __str__(self) -> str:
        where = f"templates/{self.template}" + (f":{self.line}" if self.line else "")
        who = ""
        if self.contact:
            more = f" and {self.count - 1} more" if self.count > 1 else ""
            who = f" (contact {self.contact}{more})"
        return f"{self.level}: {where}: {self.message}{who}"


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    rendered: Counter = field(default_factory=Counter)  # template file -> renders
    x_lengths: dict[str, list[int]] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == "error")

    def failed(self, template: str) -> bool:
        return any(f.level == "error" and f.template == template for f in self.findings)

    def add(self, level: str, template: str, message: str, *, line: int | None = None,
            contact: str | None = None) -> None:  # fmt: skip
        for f in self.findings:
            if (f.level, f.template, f.message, f.line) == (level, template, message, line):
                f.count += 1
                return
        self.findings.append(Finding(level, template, message, line, contact))

    def add_error(self, exc: TemplateError, fallback: str, contact: str | None = None) -> None:
        self.add("error", exc.file or fallback, exc.detail, line=exc.line, contact=contact)

    def add_problems(self, library: TemplateLibrary) -> None:
        """Warnings for the files of templates/ that are not named like templates."""
        library.files()
        for problem in library.problems:
            file, _sep, message = problem.partition(": ")
            if not any(f.template == file and f.message == message for f in self.findings):
                self.add("warning", file, message)

    def merge(self, other: CheckReport) -> None:
        """Add the findings of a check of other templates (each finding once)."""
        for f in other.findings:
            if not any((g.level, g.template, g.message, g.line) == (f.level, f.template, f.message, f.line)
                       for g in self.findings):  # fmt: skip
                self.findings.append(f)
        self.rendered.update(other.rendered)
        self.x_lengths.update(other.x_lengths)


def check_templates(
    library: TemplateLibrary,
    campaign: CampaignInfo,
    contacts: Iterable[Contact],
    *,
    names: list[str] | None = None,
    urls_for: Any = None,
) -> CheckReport:
    """Compile every template (or those named) and render each against ``contacts``."""
    report = CheckReport()
    report.add_problems(library)
    selected: list[tuple[str, dict[str | None, TemplateFile]]] = []
    wanted = names or [f"{n}.{k}" for n, k in library.names()]
    for name in wanted:
        kind, variants = library.variants(name)
        selected.append((kind, variants))
    emails = []
    for kind, variants in selected:
        ok = {}
        for lang, file in variants.items():
            try:
                ok[lang] = library.compile(file)
            except TemplateError as exc:
                report.add_error(exc, file.rel)
        if not ok:
            continue
        first = next(iter(variants.values()))
        if kind == "email":
            emails.append((first.name, variants))
            for lang, compiled in ok.items():
                assert isinstance(compiled, EmailTemplate)
                if not compiled.has_text:
                    report.add(
                        "warning",
                        variants[lang].rel,
                        "HTML without a text part: the text is made from the HTML; "
                        "add a text block to control it",
                    )
        elif kind == "x":
            for lang, compiled in ok.items():
                _check_x(report, library, variants[lang], compiled, campaign)  # type: ignore[arg-type]
        else:
            for lang, compiled in ok.items():
                _check_press(report, variants[lang], compiled, campaign)  # type: ignore[arg-type]
    if emails:
        _check_emails(report, library, emails, campaign, contacts, urls_for)
    return report


def _check_emails(report, library, emails, campaign, contacts, urls_for) -> None:  # type: ignore[no-untyped-def]
    fallbacks: dict[tuple[str, str], int] = Counter()
    for contact in contacts:
        urls = urls_for(contact) if urls_for else {}
        for name, variants in emails:
            file = library.pick(variants, contact.language)
            lang = variant_language(file, campaign)
            if (
                file.lang is None
                and contact.language
                and language_chain(contact.language)[-1] != language_chain(campaign.language)[-1]
            ):
                fallbacks[(name, contact.language)] += 1
            try:
                compiled = library.compile(file)
            except TemplateError:
                continue  # reported once already
            try:
                values = render_values(campaign, contact=contact, urls=urls, lang=lang)
                rendered = compiled.render(values)  # type: ignore[union-attr]
            except TemplateError as exc:
                report.add_error(exc, file.rel, contact.email)
                continue
            report.rendered[file.rel] += 1
            if not rendered.subject:
                report.add("error", file.rel, "the subject is empty", contact=contact.email)
            if not rendered.text.strip():
                report.add("error", file.rel, "the text part is empty", contact=contact.email)
    by_template: dict[str, list[tuple[str, int]]] = {}
    for (name, lang), count in sorted(fallbacks.items()):
        by_template.setdefault(name, []).append((lang, count))
    for name, langs in by_template.items():
        listed = ", ".join(f"{lang} ({count})" for lang, count in langs)
        report.add(
            "warning",
            f"{name}.email.j2",
            f"{len(langs)} language(s) in the audience have no variant and get {name}.email.j2: "
            f"{listed}; add {name}.LANG.email.j2 for those that should not",
        )


def _check_x(report: CheckReport, library: TemplateLibrary, file: TemplateFile,
             compiled: XTemplate, campaign: CampaignInfo) -> None:  # fmt: skip
    try:
        posts = compiled.render(render_values(
            campaign, step={"id": "check", "channel": "x"}, lang=variant_language(file, campaign)
        ))  # fmt: skip
    except TemplateError as exc:
        report.add_error(exc, file.rel)
        return
    report.rendered[file.rel] += 1
    report.x_lengths[file.rel] = [p.weighted_length for p in posts]
    if not posts:
        report.add("error", file.rel, "the post is empty")
    try:
        missing = library.missing_images(posts, file.rel)
    except TemplateError as exc:
        report.add_error(exc, file.rel)
        missing = []
    for path in missing:
        report.add("error", file.rel, missing_image_message(path, library.media))
    for i, post in enumerate(posts, 1):
        if post.weighted_length > X_MAX_WEIGHTED:
            report.add(
                "error",
                file.rel,
                f"post {i} of {len(posts)} is {post.weighted_length} long as X counts it; at most {X_MAX_WEIGHTED}",
            )


def _check_press(
    report: CheckReport, file: TemplateFile, compiled: PressTemplate, campaign: CampaignInfo
) -> None:
    try:
        compiled.render(render_values(
            campaign, step={"id": "check", "channel": "press"}, lang=variant_language(file, campaign)
        ))  # fmt: skip
    except TemplateError as exc:
        report.add_error(exc, file.rel)
        return
    report.rendered[file.rel] += 1
