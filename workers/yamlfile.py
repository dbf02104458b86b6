"""YAML files people write (campaigns, the program policy): problems named by line and key.

A file is read twice: ``yaml.safe_load`` for its values and ``yaml.compose``
for where each key sits, so that every problem found while validating the
values can name its line (``program.yaml, line 7, caps[1].window: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

__all__ = [
    "LineMap",
    "Problem",
    "YamlSyntaxError",
    "dotted",
    "line_map",
    "loc_from_path",
    "nearest_line",
    "read_yaml",
    "validation_problems",
]

#: Every key path of a document (``("caps", 0, "window")``) mapped to its 1-based line.
LineMap = Mapping[tuple[int | str, ...], int]

#: Prefixes of pydantic's union-branch labels, which are not keys of the file.
_BRANCH_LABELS = ("function-", "literal[", "list[")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file."""

    path: str
    problem: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line else ""
        return f"{where}{self.path}: {self.problem}"


class YamlSyntaxError(ValueError):
    """The text is not YAML at all; ``problem`` says where."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def read_yaml(text: str) -> tuple[Any, LineMap]:
    """Parse ``text`` into its value and its line map.

    Raises:
        YamlSyntaxError: the text is not valid YAML.
    """
    try:
        return yaml.safe_load(text), line_map(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise YamlSyntaxError(Problem("(file)", f"not valid YAML: {exc}", line)) from None


def validation_problems(exc: ValidationError, lines: LineMap) -> list[Problem]:
    """One :class:`Problem` per pydantic error, with its key path and line."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        problems.append(Problem(dotted(error["loc"]), message, nearest_line(lines, error["loc"])))
    return problems


def dotted(loc: tuple[int | str, ...]) -> str:
    """``("caps", 0, "window")`` as ``caps[0].window``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(_BRANCH_LABELS):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(file)"


def loc_from_path(path: str) -> tuple[int | str, ...]:
    """``caps[0].window`` as ``("caps", 0, "window")``: the inverse of :func:`dotted`."""
    loc: list[int | str] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        loc.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(loc)


def line_map(node: yaml.Node | None) -> dict[tuple[int | str, ...], int]:
    """Map every key path of a YAML document to its 1-based line."""
    lines: dict[tuple[int | str, ...], int] = {}

    def walk(n: yaml.Node, loc: tuple[int | str, ...]) -> None:
        lines[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = (*loc, str(key.value))
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*loc, i))

    if node is not None:
        walk(node, ())
    return lines


def nearest_line(lines: LineMap, loc: tuple[Any, ...]) -> int | None:
    """The line of ``loc``, or of its nearest enclosing key when it is absent from the file."""
    loc = tuple(p for p in loc if not str(p).startswith(_BRANCH_LABELS))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())
