"""Segment files: a saved audience a marketer writes once and campaigns name.

::

    name: gold-with-points
    description: Gold and platinum members with 500+ points
    rule:
      all:
        - {field: tier, op: in, value: [gold, platinum]}
        - {field: points_balance, op: ">=", value: 500}

``loyalcast segments save FILE`` stores it; a campaign then says
``segment: gold-with-points``, and its version keeps the rule as it was when
the campaign was created (editing the segment later does not change runs
already scheduled). Errors name the file, line and path in the rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments import Rule, RuleError, parse_rule

from .yamlfile import Problem, YamlSyntaxError, loc_from_path, nearest_line, read_yaml

__all__ = ["SegmentFile", "SegmentFileError", "parse_segment_file"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


class SegmentFileError(ValueError):
    """A segment file cannot be used; every problem is listed with its line."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{source}, {p}" for p in problems))


@dataclass(frozen=True)
class SegmentFile:
    """A parsed segment file."""

    name: str
    description: str | None
    rule_data: Any
    rule: Rule


def parse_segment_file(path: Path, *, attributes: Mapping[str, str] | None = None) -> SegmentFile:
    """Read and check a segment file.

    Raises:
        SegmentFileError: unreadable, not YAML, a wrong key, or a rule error.
    """
    source = str(path)
    try:
        data, lines = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SegmentFileError(source, [Problem("(file)", f"cannot read: {exc}")]) from None
    except YamlSyntaxError as exc:
        raise SegmentFileError(source, [exc.problem]) from None
    if not isinstance(data, dict):
        raise SegmentFileError(
            source, [Problem("(file)", "must be a mapping with name and rule", 1)]
        )
    problems = [
        Problem(
            key,
            "unknown key; a segment file has name, description and rule",
            nearest_line(lines, (key,)),
        )
        for key in data
        if key not in ("name", "description", "rule")
    ]
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            Problem(
                "name",
                "must be lower-case letters, digits, '-' or '_'",
                nearest_line(lines, ("name",)),
            )
        )
    if "rule" not in data:
        problems.append(Problem("rule", "missing: the audience rule", 1))
    if problems:
        raise SegmentFileError(source, problems)
    try:
        rule = parse_rule(data["rule"], "rule", attributes=attributes)
    except RuleError as exc:
        line = nearest_line(lines, loc_from_path(exc.path))
        raise SegmentFileError(source, [Problem(exc.path, exc.problem, line)]) from None
    description = data.get("description")
    return SegmentFile(str(name), str(description) if description else None, data["rule"], rule)
