"""``python -m bench plot RESULTS.json``: throughput over time during the end-to-end runs, as a PNG.

Draws every series of every scenario in a results file (messages accepted by
the fakes per second, in one-second bins from the tick or the first enqueue)
on one chart, and writes it next to the file (``RESULTS.png``). Needs
matplotlib, from the optional extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_file"]


def plot_file(results: Path, out: Path | None = None) -> Path:
    """Plot the series of ``results`` into ``out`` (default: the same name, ``.png``).

    Raises:
        RuntimeError: matplotlib is not installed, or the file holds no series.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("the plot needs matplotlib: pip install -e '.[bench]'") from None
    data = json.loads(results.read_text(encoding="utf-8"))
    series = {
        f"{name}": points
        for result in data["results"]
        for name, points in result.get("series", {}).items()
        if points
    }
    if not series:
        raise RuntimeError(f"{results} holds no throughput series (run the broadcast scenario)")
    figure, axes = plt.subplots(figsize=(10, 5))
    for name, points in series.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.5)
    members = data.get("parameters", {}).get("members")
    machine = data.get("machine", {})
    axes.set_title(
        f"messages accepted per second, {members:,} members"
        f" ({machine.get('logical_cpus', '?')} CPUs, {machine.get('cpu', '')})"
    )
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("messages / s")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    target = out or results.with_suffix(".png")
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
