"""Files a workspace's templates and posts may use: those inside the workspace.

A link in ``templates/`` or ``media/`` may point at another file of the workspace;
one whose real path leads outside it (``templates/x.email.j2 -> /etc/passwd``) is
refused before the file is read, wherever it is used: the Jinja loader (templates,
layouts, partials), the images an X post attaches, and their upload.
"""

from __future__ import annotations

import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from jinja2.loaders import split_template_path

from outreach.domain.errors import TemplateError

HINT = "copy the file into the workspace, or make the link point at a file inside it"


def outside(path: Path, workspace: Path) -> tuple[str, Path] | None:
    """When ``path`` leads outside ``workspace`` through a link: (the link, as a path
    inside the workspace, and the real path it leads to); else None (also when
    ``path`` does not exist)."""
    if not os.path.lexists(path):
        return None
    root = Path(os.path.realpath(workspace))
    real = Path(os.path.realpath(path))
    if real.is_relative_to(root):
        return None
    try:
        parts = path.relative_to(workspace).parts
    except ValueError:
        return str(path), real
    link = workspace
    for part in parts:  # the first component that leads out is the link
        link = link / part
        target = Path(os.path.realpath(link))
        if not target.is_relative_to(root):
            return "/".join(link.relative_to(workspace).parts), target
    return str(path), real


def refusal(link: str, target: Path) -> str:
    return f"{link} is a link to {target}, outside the workspace"


def check_inside(path: Path, workspace: Path, *, template: str | None = None) -> None:
    """A ``TemplateError`` (naming ``template``) when ``path`` leads outside
    ``workspace`` through a link."""
    found = outside(path, workspace)
    if found is not None:
        raise TemplateError(refusal(*found), file=template, hint=HINT)


class WorkspaceLoader(FileSystemLoader):
    """``FileSystemLoader`` for ``templates/`` that refuses a template whose real path
    leads outside the workspace (it would follow the link and read the file)."""

    def __init__(self, root: Path, workspace: Path) -> None:
        super().__init__(str(root))
        self.root = root
        self.workspace = workspace

    def get_source(self, environment: Environment, template: str):  # type: ignore[no-untyped-def]
        pieces = split_template_path(template)
        found = outside(self.root.joinpath(*pieces), self.workspace)
        if found is not None:
            link, target = found
            own = link == "/".join((self.root.name, *pieces))  # the template's file itself
            message = f"a link to {target}, outside the workspace" if own else refusal(link, target)
            raise TemplateError(message, file=template, hint=HINT)
        return super().get_source(environment, template)
