"""PNG figures of a run (matplotlib, Agg backend): bars by workload, speedups, scaling curves, peak.

Each runner keeps one colour and marker across every figure. Figures whose data is missing
(no SPEC workload, no sweep) are simply not drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convstdp.bench.suite import baselines, sweep_families
from convstdp.bench.workloads import SWEEP_DIMS
from convstdp.present import fmt_time

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h"]
_DIM_LABEL = {
    "batch": "batch size N",
    "map": "input map size H = W",
    "channels": "channels Ci = Co",
    "kernel": "kernel size k",
    "density": "spike density",
}
DPI = 110
_LEGEND_RIGHT = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 13,
            "axes.labelsize": 11,
            "legend.fontsize": 10,
            "figure.titlesize": 15,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "savefig.bbox": "tight",
        }
    )
    return plt


def _style(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    names = [r["name"] for r in result["runners"]]
    return {n: (_COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]) for i, n in enumerate(names)}


def _ok(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["workload"], r["runner"]): r for r in result["results"] if r["status"] == "ok" and r["samples"]}


def _measured_runners(result: dict[str, Any], workloads: list[str]) -> list[str]:
    """Runners with a measurement on one of ``workloads`` at least."""
    ok = _ok(result)
    return [r["name"] for r in result["runners"] if any((w, r["name"]) in ok for w in workloads)]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def _ms_axis(axis: Any) -> None:
    """Tick labels of a millisecond axis in µs, ms or s."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt_time(v / 1e3) if v > 0 else ""))


def _bars(ax: Any, series: list[tuple[list[tuple[int, float, str, float]], dict]], horizontal: bool = False, **text):
    """Grouped bars, group ``i`` centred on ``i``, one bar per series in each group, each bar labelled.

    ``series``: ``(points, bar keyword arguments)``; a point is ``(group, value, label, where the label
    goes along the value axis)``.
    """
    width = 0.8 / len(series)
    for j, (points, kw) in enumerate(series):
        pos = [i - 0.4 + width * (j + 0.5) for i, *_ in points]
        vals = [v for _, v, _, _ in points]
        bars = ax.barh(pos, vals, width * 0.9, **kw) if horizontal else ax.bar(pos, vals, width * 0.92, **kw)
        for b, (_, _, label, at) in zip(bars, points, strict=True):
            if horizontal:
                xy, off, align = (at, b.get_y() + b.get_height() / 2), (3, 0), {"va": "center"}
            else:
                xy, off, align = (b.get_x() + b.get_width() / 2, at), (0, 3), {"ha": "center", "va": "bottom"}
            ax.annotate(label, xy, xytext=off, textcoords="offset points", fontsize=8, **align, **text)


def _spec_axes(
    ax: Any, result: dict[str, Any], spec: list[str], ylabel: str, title: str, margin: float, legend: str | None = None
):
    """The log-scale, one-group-per-SPEC-workload axes of the vertical bar charts."""
    ax.set(yscale="log", ylabel=ylabel, title=title)
    ax.set_xticks(range(len(spec)), [_spec_label(result, w) for w in spec])
    ax.margins(y=margin)
    ax.legend(title=legend, **_LEGEND_RIGHT)
    ax.grid(axis="x", visible=False)


def _spec_label(result: dict[str, Any], name: str) -> str:
    w = next(w for w in result["workloads"] if w["name"] == name)
    c = w["case"].split("-")  # e.g. s1-same-k5x5-m28x28-c8to16-n32-...: stride, padding, kernel, map, channels, batch
    return f"{name}\n{c[5][1:]}×{c[3][1:]} {c[4][1:].replace('to', '→')} {c[2]} {c[0]}"


def _spec(result: dict[str, Any]) -> list[str]:
    return [w["name"] for w in result["workloads"] if w["group"] == "spec"]


def time_by_workload(result: dict[str, Any], out: Path) -> Path | None:
    """Grouped bars: median time per step for each SPEC workload, one bar per runner, log scale."""
    spec, ok, style = _spec(result), _ok(result), _style(result)
    runners = _measured_runners(result, spec)
    if not spec or not runners:
        return None
    series = []
    for name in runners:
        stats = [(i, ok[(w, name)]["stats"]) for i, w in enumerate(spec) if (w, name) in ok]
        lo = [(s["median"] - s["q1"]) * 1e3 for _, s in stats]
        hi = {i: (s["q3"] - s["median"]) * 1e3 for i, s in stats}
        points = [(i, s["median"] * 1e3, fmt_time(s["median"]), s["median"] * 1e3 + hi[i]) for i, s in stats]
        err = {"yerr": [lo, list(hi.values())], "capsize": 3, "error_kw": {"elinewidth": 1, "ecolor": "#333"}}
        series.append((points, {"color": style[name][0], "label": name, **err}))
    fig, ax = _plt().subplots(figsize=(max(7.0, 2.2 * len(spec) + 2), 5.2))
    _bars(ax, series, rotation=90)
    title = "Time per STDP step by workload (lower is better)"
    _spec_axes(ax, result, spec, "median time per STDP step (log scale)", title, 0.3, "runner")
    _ms_axis(ax.yaxis)  # after the log scale, which resets the formatter
    return _save(fig, out / "time_by_workload.png")


def speedup(result: dict[str, Any], out: Path) -> Path | None:
    """Speedup of each non-baseline runner over each baseline, per SPEC workload (log scale)."""
    spec, ok, style, peers = _spec(result), _ok(result), _style(result), baselines(result)
    fast = [n for n in _measured_runners(result, spec) if n not in peers]
    bases = [b for b in peers if any((w, b) in ok for w in spec)]
    pairs = [(f, b) for f in fast for b in bases]
    if not spec or not pairs:
        return None
    series = []
    for f, b in pairs:
        ups = [(i, r["speedup"][b]) for i, w in enumerate(spec) if (r := ok.get((w, f))) and b in r["speedup"]]
        hatch = ["", "//", "..", "xx"][bases.index(b) % 4]
        kw = {"color": style[f][0], "hatch": hatch, "edgecolor": "white", "label": f"{f} vs {b}"}
        series.append(([(i, v, f"{v:.3g}×", v) for i, v in ups], kw))
    fig, ax = _plt().subplots(figsize=(max(7.0, 2.2 * len(spec) + 2), 5.0))
    _bars(ax, series, rotation=90 if len(pairs) > 3 else 0)
    ax.axhline(1.0, color="#333", lw=1, ls="--")
    title = "Speedup per STDP step over each baseline (higher is better; dashed line = parity)"
    ylabel = "speedup (baseline time / backend time, log)"
    _spec_axes(ax, result, spec, ylabel, title, 0.3 if len(pairs) > 3 else 0.2)
    return _save(fig, out / "speedup.png")


def achieved_vs_peak(result: dict[str, Any], out: Path) -> Path | None:
    """Horizontal bars of GFLOP/s per runner for SPEC workloads and sweep base points, against the peak."""
    names = [w["name"] for w in result["workloads"] if w["group"] == "spec" or w["name"].endswith("/base")]
    ok, style = _ok(result), _style(result)
    runners = _measured_runners(result, names)
    peak = result["peak"].get("cpu_peak_gflops")
    if not names or not runners:
        return None
    series = []
    for name in runners:
        vs = [(i, r["gflops"]) for i, w in enumerate(names) if (r := ok.get((w, name))) and r["gflops"]]
        points = [(i, v, f"{v:.3g}" + (f" ({_pct(100 * v / peak)})" if peak else ""), v) for i, v in vs]
        series.append((points, {"color": style[name][0], "label": name}))
    best = max([0.0, *(v for points, _ in series for _, v, _, _ in points)])
    title = "Achieved throughput against the machine's measured peak"
    fig, ax = _plt().subplots(figsize=(9.5, 0.32 * len(names) * len(runners) + 2.0))
    _bars(ax, series, horizontal=True)
    if peak:
        ax.axvline(peak, color="#000", lw=1.5, ls="--", label=f"float32 GEMM peak {peak:.4g} GFLOP/s")
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="achieved GFLOP/s (log scale; label: GFLOP/s and % of peak)", title=title)
    ax.set_xlim(right=max(best, peak or 0) * 4)
    ax.legend(fontsize=9, **_LEGEND_RIGHT)
    ax.grid(axis="y", visible=False)
    return _save(fig, out / "achieved_vs_peak.png")


def _pct(v: float) -> str:
    return f"{v:.0f}%" if v >= 10 else f"{v:.2g}%"


def _sweep_column(axes: Any, dim: str, ws: list[dict[str, Any]], ok: dict, runners: list[str], style: dict) -> None:
    """Time per call (top) and GFLOP/s (bottom) of every runner along sweep dimension ``dim``, log-log."""
    pts = sorted((v, w["name"]) for w in ws for d, v in w["sweeps"] if d == dim)
    for name in runners:
        rs = [(v, ok[(wn, name)]) for v, wn in pts if (wn, name) in ok]
        xs = [v for v, _ in rs]
        line = {"color": style[name][0], "marker": style[name][1], "label": name, "lw": 1.8, "ms": 6}
        axes[0].plot(xs, [r["stats"]["median"] * 1e3 for _, r in rs], **line)
        axes[1].plot(xs, [r["gflops"] for _, r in rs], **line)
    for ax in axes:
        ax.set(xscale="log", yscale="log")
        ax.set_xticks([v for v, _ in pts], [f"{v:g}" for v, _ in pts])
        ax.minorticks_off()
    _ms_axis(axes[0].yaxis)
    axes[0].set_title(_DIM_LABEL[dim])
    axes[1].set_xlabel(_DIM_LABEL[dim])


def scaling(result: dict[str, Any], fam: str, ws: list[dict[str, Any]], out: Path) -> Path | None:
    """Top row: time per call vs each swept dimension (log-log); bottom row: GFLOP/s."""
    runners = _measured_runners(result, [w["name"] for w in ws])
    dims = [d for d in SWEEP_DIMS if any(dd == d for w in ws for dd, _ in w["sweeps"])]
    if not ws or not runners or not dims:
        return None
    fig, axes = _plt().subplots(2, len(dims), figsize=(max(7.0, 3.3 * len(dims) + 1), 7.2), squeeze=False, sharex="col")
    ok, style = _ok(result), _style(result)
    for c, dim in enumerate(dims):
        _sweep_column(axes[:, c], dim, ws, ok, runners, style)
    axes[0, 0].set_ylabel("median time per call")
    axes[1, 0].set_ylabel("GFLOP/s")
    peak = result["peak"].get("cpu_peak_gflops")
    if peak:
        for ax in axes[1]:
            ax.axhline(peak, color="#000", ls="--", lw=1)
        axes[1, 0].annotate(
            "GEMM peak", (axes[1, 0].get_xlim()[0], peak), xytext=(2, -12), textcoords="offset points", fontsize=8
        )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncols=min(len(labels), 6), bbox_to_anchor=(0.5, -0.04), title="runner"
    )
    what = (
        "one dimension varied at a time around N=16, 16×16, Ci=Co=16, k=5, stride 2, SAME, density 0.1"
        if fam == "step"
        else "spike density swept, traces dense (SPEC §8)"
    )
    fig.suptitle(f"STDP step, {fam} (log-log)\n{what}", fontsize=13)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out / f"sweep_{fam}.png")


def make_all(result: dict[str, Any], out: Path) -> list[Path]:
    """Every figure this run has data for, written as PNGs into ``out``."""
    paths = [time_by_workload(result, out), speedup(result, out), achieved_vs_peak(result, out)]
    paths += [scaling(result, fam, ws, out) for fam, ws in sweep_families(result).items()]
    return [p for p in paths if p is not None]
