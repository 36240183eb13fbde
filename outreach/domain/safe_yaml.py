"""YAML files a person writes (plans, a press release's front matter), read safely.

``yaml.safe_load`` builds only plain data, but it follows the file wherever it
goes: PyYAML composes nested collections by recursion (10,000 ``[`` are a raw
RecursionError), and aliases repeat what their anchor names (nine anchors of nine
aliases each are 387,420,489 values: whatever walks the data takes the memory).
Here a document may nest at most ``YAML_MAX_DEPTH`` (100) levels and hold at most
``YAML_MAX_VALUES`` (100,000) values once its aliases are expanded; past either, or
with an alias inside the collection it names, it is a ``yaml.MarkedYAMLError`` with
the line, like any other YAML error.
"""

from __future__ import annotations

from typing import Any

import yaml

YAML_MAX_DEPTH = 100
YAML_MAX_VALUES = 100_000


class LimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` within ``YAML_MAX_DEPTH`` and ``YAML_MAX_VALUES``."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            mark = self.peek_event().start_mark
            if self._depth > YAML_MAX_DEPTH:
                raise _too_deep(mark)
            alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
            self._measure(node, alias, mark)
            return node
        finally:
            self._depth -= 1

    def _measure(self, node: Any, alias: bool, mark: Any) -> None:
        measured = self._measured
        if id(node) in measured:
            return
        if alias:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to the collection it is in", mark
            )
        if isinstance(node, yaml.SequenceNode):
            children = [measured[id(child)] for child in node.value]
        elif isinstance(node, yaml.MappingNode):
            children = [measured[id(x)] for pair in node.value for x in pair]
        else:
            children = []
        values = 1 + sum(c[0] for c in children)
        depth = 1 + max((c[1] for c in children), default=0)
        if values > YAML_MAX_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"expands to more than {YAML_MAX_VALUES:,} values "
                "(each *alias repeats what its &anchor names)", mark,
            )  # fmt: skip
        if depth > YAML_MAX_DEPTH:
            raise _too_deep(mark)
        measured[id(node)] = (values, depth)


def _too_deep(mark: Any) -> yaml.MarkedYAMLError:
    return yaml.composer.ComposerError(None, None, f"nested deeper than {YAML_MAX_DEPTH} levels", mark)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` within the limits."""
    return yaml.load(text, Loader=LimitedLoader)  # a SafeLoader


def compose(text: str) -> Any:
    """``yaml.compose`` (nodes with their lines) within the limits."""
    return yaml.compose(text, Loader=LimitedLoader)
