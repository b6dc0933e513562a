"""The Performance page's plot: six panels, courier-analytics beside segment-analytics-python."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

COLORS = {"courier": "#4c6ef5", "segment": "#52b788", "trycourier": "#adb5bd", "floor": "#ced4da"}
LABELS = {
    "courier": "courier-analytics",
    "segment": "segment-analytics-python",
    "trycourier": "trycourier inline",
    "floor": "floor (no library)",
}
PEERS = ("courier", "segment")


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
    figures, reference, medians = result["figures"], result["reference"], result["medians"]

    def values(names: list[str], lib: str) -> list[float | None]:
        return [figures[name].get(lib) for name in names]

    def reading(scenario: str, lib: str, key: str) -> float | None:
        value = medians.get(scenario, {}).get(lib, {}).get(key)
        return value if isinstance(value, (int, float)) else None

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    n = result["meta"]["n"]

    caller = ["caller_us_small", "caller_us_kb"]
    inline = reference["trycourier_inline_us_0ms"]["trycourier"]
    _bars(
        axes[0][0],
        ["~100 B properties", "~1 KB properties"],
        {lib: values(caller, lib) for lib in PEERS},
        "microseconds per call (mean)",
    )
    axes[0][0].set_title(
        "Caller cost of track() (lower is better)"
        + (f"\ntrycourier inline call: {inline:,.0f} us" if inline else ""),
        fontsize=9,
    )

    tail = ["caller_p50_us", "caller_p99_us", "caller_p999_us"]
    _bars(
        axes[0][1],
        ["p50", "p99", "p99.9"],
        {lib: [reading("tail_0ms", lib, key) for key in tail] for lib in PEERS},
        "microseconds per call",
    )
    axes[0][1].set_yscale("log")
    axes[0][1].set_title(
        "Caller cost per call while the worker delivers flat out\n(log scale)", fontsize=9
    )

    times = ["time_s_0ms", "time_s_20ms", "time_s_100ms", "time_s_tls_20ms"]
    _bars(
        axes[0][2],
        ["0 ms", "20 ms", "100 ms", "TLS, 20 ms"],
        {lib: values(times, lib) for lib in PEERS},
        "seconds",
    )
    axes[0][2].set_title(
        f"Time until the server has {n:,} events\n(1,000 users), by server latency", fontsize=9
    )

    hot = ["time_s_20ms", "time_s_hot_20ms"]
    _bars(
        axes[1][0],
        ["over 1,000 users", "one user"],
        {lib: values(hot, lib) for lib in PEERS},
        "seconds",
    )
    axes[1][0].set_title(f"One busy user: {n:,} events at 20 ms", fontsize=9)

    # Every CPU result, the one where the library loses (TLS at 20 ms: a handshake per
    # connection) included; each group's bars come from the run its label names.
    cpu_series: dict[str, list[float | None]] = {
        lib: [
            figures["cpu_us_per_event"].get(lib),
            figures["cpu_us_per_event_tls"].get(lib),
            reading("tls_20ms", lib, "cpu_us_per_event"),
        ]
        for lib in PEERS
    }
    cpu_series["floor"] = [
        figures["floor_cpu_http"].get("floor"),
        figures["floor_cpu_tls"].get("floor"),
        None,
    ]
    _bars(
        axes[1][1],
        ["HTTP, 0 ms", "TLS, 0 ms", "TLS, 20 ms"],
        cpu_series,
        "CPU microseconds per event",
    )
    shakes = {lib: reading("tls_20ms", lib, "handshakes") for lib in PEERS}
    axes[1][1].set_title(
        "Client CPU per delivered event (lower is better)\nTLS handshakes at 20 ms: "
        + ", ".join(f"{LABELS[lib]} {_short(shakes[lib])}" for lib in PEERS),
        fontsize=8,
    )

    # Peak memory where the library loses (TLS at 20 ms: a buffer per connection) and
    # where it wins (a stalled server: compact queued messages).
    memory = {
        lib: [reading("tls_20ms", lib, "rss_peak_mb"), figures["rss_peak_mb_stalled"].get(lib)]
        for lib in PEERS
    }
    _bars(
        axes[1][2],
        [f"TLS, 20 ms\n({n:,} events)", f"{result['meta']['stall_n']:,} queued\n(stalled server)"],
        memory,
        "MB",
    )
    axes[1][2].set_title("Peak memory of the client (RSS, lower is better)", fontsize=9)

    handles, labels = axes[1][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=9, frameon=False)
    meta = result["meta"]
    fig.text(
        0.5, 0.01,
        f"Medians of {meta['rounds']} round(s) in one run on {meta['cpus']} shared cores, "
        f"Python {meta['python']}, {meta['date'][:10]}. Command: {meta['command']}",
        ha="center", fontsize=7, color="#555555",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"
