"""Figures, their tables and the JSON file an invocation writes.

A scenario returns a :class:`ScenarioResult`: named rows of figures (each a
number with its unit), optional ratios to the baselines, notes that say how
the figures were taken (sampled spec validation, raised rate limits, a
baseline run on a subset), and series (throughput over time) for the plot.
:func:`print_result` shows it as a Rich table; :func:`write_json` stores every
result of one invocation with the machine and the parameters, so figures are
never read apart from the conditions they were measured under.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "Figure",
    "Ratio",
    "Row",
    "ScenarioResult",
    "markdown",
    "median",
    "print_result",
    "write_json",
]


@dataclass(frozen=True)
class Figure:
    """One measured number and its unit (``s``, ``ms``, ``rows/s``, ``MiB``, ``count``)."""

    name: str
    value: float
    unit: str


@dataclass
class Row:
    """One line of a scenario's table: a thing measured and its figures."""

    label: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str) -> Row:
        self.figures.append(Figure(name, value, unit))
        return self

    def get(self, name: str) -> float:
        """The value of figure ``name``.

        Raises:
            KeyError: this row has no such figure.
        """
        for figure in self.figures:
            if figure.name == name:
                return figure.value
        raise KeyError(f"row {self.label!r} has no figure {name!r}")


@dataclass(frozen=True)
class Ratio:
    """Our throughput divided by a baseline's, with the issue's target for it."""

    label: str
    ours: float
    baseline: str
    theirs: float
    target: float | None = None

    @property
    def value(self) -> float:
        return self.ours / self.theirs if self.theirs else float("inf")

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.value >= self.target


@dataclass
class ScenarioResult:
    """Everything one scenario measured."""

    scenario: str
    title: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Named time series of (seconds since start, value), e.g. messages/s per second."""

    def row(self, label: str) -> Row:
        """The row called ``label``, created on first use."""
        for row in self.rows:
            if row.label == label:
                return row
        row = Row(label)
        self.rows.append(row)
        return row

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = [
            {**asdict(r), "value": r.value, "meets_target": r.meets_target} for r in self.ratios
        ]
        return data


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def _format(value: float, unit: str) -> str:
    if unit == "count" or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def print_result(console: Console, result: ScenarioResult) -> None:
    """The scenario's figures as a table, then its ratios and notes."""
    names: list[str] = []
    units: dict[str, str] = {}
    for row in result.rows:
        for f in row.figures:
            if f.name not in names:
                names.append(f.name)
                units[f.name] = f.unit
    table = Table(title=f"{result.scenario}: {result.title}", title_justify="left")
    table.add_column("")
    for name in names:
        unit = units[name]
        table.add_column(name if unit == "count" else f"{name} ({unit})", justify="right")
    for row in result.rows:
        cells = {f.name: _format(f.value, f.unit) for f in row.figures}
        table.add_row(row.label, *(cells.get(name, "") for name in names))
    console.print(table)
    for ratio in result.ratios:
        verdict = ""
        if ratio.meets_target is not None:
            mark = "[green]meets[/]" if ratio.meets_target else "[red]misses[/]"
            verdict = f" ({mark} the target {ratio.target:g}x)"
        console.print(
            f"  {ratio.label}: {ratio.value:.2f}x {ratio.baseline}"
            f" ({ratio.ours:,.1f} vs {ratio.theirs:,.1f}){verdict}"
        )
    for note in result.notes:
        console.print(f"  [dim]note:[/] {note}")


def write_json(
    path: Path,
    *,
    machine: dict[str, Any],
    parameters: dict[str, Any],
    results: Sequence[ScenarioResult],
) -> None:
    """Write one invocation's results, machine and parameters to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": machine,
        "parameters": parameters,
        "results": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def markdown(data: dict[str, Any]) -> str:
    """A results file (as written by :func:`write_json`) as Markdown tables, for the README."""
    lines: list[str] = []
    for result in data["results"]:
        names: list[str] = []
        units: dict[str, str] = {}
        for row in result["rows"]:
            for f in row["figures"]:
                if f["name"] not in names:
                    names.append(f["name"])
                    units[f["name"]] = f["unit"]
        header = [n if units[n] == "count" else f"{n} ({units[n]})" for n in names]
        lines += [f"**{result['scenario']}**: {result['title']}", ""]
        lines.append("| | " + " | ".join(header) + " |")
        lines.append("| --- |" + " ---: |" * len(names))
        for row in result["rows"]:
            cells = {f["name"]: _format(f["value"], f["unit"]) for f in row["figures"]}
            lines.append(
                f"| {row['label']} | " + " | ".join(cells.get(n, "") for n in names) + " |"
            )
        for ratio in result["ratios"]:
            target = f" (target {ratio['target']:g}x)" if ratio["target"] is not None else ""
            lines.append(f"\n- {ratio['label']}: **{ratio['value']:.2f}x**{target}")
        lines += ["", *(f"- {note}" for note in result["notes"]), ""]
    return "\n".join(lines)
