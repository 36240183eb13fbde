"""The press channel: a newsroom directory of static pages, one per release, an
index page and an Atom feed (feedgen) of every release. Publishing the same release
again rewrites the same files, so a publication cut short is simply done again.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from outreach.ports import PostItem, PostResult

INDEX = "releases.json"  # the newsroom's own record of what it has published
FEED = "feed.atom"


def _write(path: Path, data: str) -> None:
    """Readers never see half a file: write beside it, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class Newsroom:
    """``publish`` a rendered release; the pages are served from ``base_url``. It is
    the press channel's ``ports.PostTarget``: an item is one release."""

    service = "the newsroom"

    def __init__(self, folder: Path, base_url: str, title: str = "Newsroom") -> None:
        self.folder = folder
        self.base_url = base_url.rstrip("/") + "/"
        self.title = title
        self.name = f"the newsroom {folder}"

    def facts(self, item: PostItem) -> dict[str, Any]:
        return {}

    def deliver(self, item: PostItem, at: datetime) -> PostResult:
        return self.publish(item.content, published=at)

    def url(self, slug: str) -> str:
        return f"{self.base_url}{slug}.html"

    def releases(self) -> list[dict[str, Any]]:
        path = self.folder / INDEX
        return json.loads(path.read_text("utf-8")) if path.is_file() else []

    def publish(self, content: dict[str, Any], published: datetime) -> PostResult:
        """``content``: slug, headline, dateline, summary, html (the whole page)."""
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        slug = content["slug"]
        _write(self.folder / f"{slug}.html", content["html"])
        entry = {"slug": slug, "headline": content["headline"], "dateline": content["dateline"],
                 "summary": content.get("summary", ""), "published": published.isoformat(),
                 "campaign": content.get("campaign", "")}  # fmt: skip
        releases = [r for r in self.releases() if r["slug"] != slug] + [entry]
        releases.sort(key=lambda r: r["published"], reverse=True)
        _write(self.folder / INDEX, json.dumps(releases, ensure_ascii=False, indent=1))
        _write(self.folder / FEED, self._feed(releases))
        _write(self.folder / "index.html", self._index(releases))
        return PostResult(True, slug, code=200, text=f"published {slug}.html",
                          duration_ms=round((time.monotonic() - started) * 1000, 1), url=self.url(slug))  # fmt: skip

    def _feed(self, releases: list[dict[str, Any]]) -> str:
        from feedgen.feed import FeedGenerator

        feed = FeedGenerator()
        feed.id(self.base_url)
        feed.title(self.title)
        feed.link(href=self.base_url, rel="alternate")
        feed.link(href=self.base_url + FEED, rel="self")
        feed.language("en")
        for r in reversed(releases):  # feedgen puts the last added first
            item = feed.add_entry()
            item.id(self.url(r["slug"]))
            item.title(r["headline"])
            item.link(href=self.url(r["slug"]))
            item.published(datetime.fromisoformat(r["published"]))
            item.updated(datetime.fromisoformat(r["published"]))
            item.summary(f"{r['dateline']} {r['summary']}".strip())
        if releases:
            feed.updated(datetime.fromisoformat(releases[0]["published"]))
        return feed.atom_str(pretty=True).decode("utf-8")

    def _index(self, releases: list[dict[str, Any]]) -> str:
        items = "\n".join(
            f'<li><a href="{html.escape(r["slug"])}.html">{html.escape(r["headline"])}</a> '
            f"<small>{html.escape(r['dateline'])}</small></li>"
            for r in releases
        )
        title = html.escape(self.title)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>\n'
            f'<link rel="alternate" type="application/atom+xml" href="{FEED}" title="{title}">'
            f"</head>\n<body><h1>{title}</h1>\n<ul>\n{items}\n</ul>\n"
            f'<p><a href="{FEED}">Atom feed</a></p></body></html>\n'
        )
