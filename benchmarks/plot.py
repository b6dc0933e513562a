"""The Performance page's plot: four panels, courier-analytics beside segment-analytics-python."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

COLORS = {"courier": "#4c6ef5", "segment": "#52b788", "trycourier": "#adb5bd"}
LABELS = {
    "courier": "courier-analytics",
    "segment": "segment-analytics-python",
    "trycourier": "trycourier inline",
}


def _bars(ax: Any, groups: list[str], series: dict[str, list[float | None]], unit: str) -> None:
    width = 0.8 / max(1, len(series))
    for index, (lib, values) in enumerate(series.items()):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=LABELS[lib], color=COLORS[lib])
        for bar, value in zip(bars, values, strict=True):
            text = "-" if value is None else (f"{value:,.0f}" if value >= 10 else f"{value:.2g}")
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points",
            )  # fmt: skip
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.margins(y=0.15)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Draw the plot to ``path``; ``False`` (with a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    figures, reference = result["figures"], result["reference"]

    def pair(name: str) -> dict[str, float | None]:
        return {lib: figures[name][lib] for lib in ("courier", "segment")}

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    caller = ["caller_us_small", "caller_us_kb"]
    inline = reference["trycourier_inline_us_0ms"]["trycourier"]
    _bars(
        axes[0][0],
        ["~100 B properties", "~1 KB properties"],
        {lib: [figures[f][lib] for f in caller] for lib in ("courier", "segment")},
        "microseconds per call",
    )
    axes[0][0].set_title(
        "Caller cost of track() (lower is better)"
        + (f"\ntrycourier inline call: {inline:,.0f} us" if inline else ""),
        fontsize=9,
    )
    times = ["time_s_0ms", "time_s_20ms", "time_s_100ms"]
    _bars(
        axes[0][1],
        ["0 ms", "20 ms", "100 ms"],
        {lib: [figures[f][lib] for f in times] for lib in ("courier", "segment")},
        "seconds",
    )
    n = result["meta"]["n"]
    axes[0][1].set_title(f"Time until the server has {n:,} events, by server latency", fontsize=9)
    _bars(
        axes[1][0],
        ["0 ms", "20 ms"],
        {
            lib: [figures[f][lib] for f in ("cpu_us_per_event", "cpu_us_per_event_20ms")]
            for lib in ("courier", "segment")
        },
        "CPU microseconds per event",
    )
    axes[1][0].set_title("Client process CPU per delivered event", fontsize=9)
    stalled = pair("rss_peak_mb_stalled")
    _bars(axes[1][1], ["peak RSS"], {lib: [v] for lib, v in stalled.items()}, "MB")
    axes[1][1].set_title(
        f"Memory with {result['meta']['stall_n']:,} events queued behind a stalled server",
        fontsize=9,
    )
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=9, frameon=False)
    meta = result["meta"]
    fig.text(
        0.5, 0.01,
        f"Medians of {meta['rounds']} round(s) in one run on {meta['cpus']} shared cores, "
        f"Python {meta['python']}, {meta['date'][:10]}. Command: {meta['command']}",
        ha="center", fontsize=7, color="#555555",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
