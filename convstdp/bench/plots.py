"""PNG figures of a run (matplotlib, Agg backend): bars by workload, speedups, scaling curves, peak.

Each runner keeps one colour and marker across every figure. Figures whose data is missing
(no SPEC workload, no sweep) are simply not drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convstdp.bench.suite import baselines, sweep_families
from convstdp.bench.workloads import SWEEP_DIMS

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
    ok = _ok(result)
    return [r["name"] for r in result["runners"] if any((w, r["name"]) in ok for w in workloads)]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def _ms_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    def f(v: float, _: Any) -> str:
        if v <= 0:
            return ""
        if v >= 1000:
            return f"{v / 1000:g} s"
        if v >= 1:
            return f"{v:g} ms"
        return f"{v * 1000:g} µs"

    return FuncFormatter(f)


def _short_ms(v: float) -> str:
    """Milliseconds → a 3-significant-digit label in µs, ms or s."""
    if v >= 1000:
        return f"{v / 1000:.3g} s"
    if v >= 1:
        return f"{v:.3g} ms"
    return f"{v * 1000:.3g} µs"


def _pct(v: float) -> str:
    return f"{v:.0f}%" if v >= 10 else f"{v:.2g}%"


def time_by_workload(result: dict[str, Any], out: Path) -> Path | None:
    """Grouped bars: median time per step for each SPEC workload, one bar per runner, log scale."""
    spec = [w["name"] for w in result["workloads"] if w["group"] == "spec"]
    runners = _measured_runners(result, spec)
    if not spec or not runners:
        return None
    plt, ok, style = _plt(), _ok(result), _style(result)
    fig, ax = plt.subplots(figsize=(max(7.0, 2.2 * len(spec) + 2), 5.2))
    width = 0.8 / len(runners)
    for j, name in enumerate(runners):
        xs, ys, lo, hi = [], [], [], []
        for i, w in enumerate(spec):
            r = ok.get((w, name))
            if r is None:
                continue
            s = r["stats"]
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(s["median"] * 1e3)
            lo.append((s["median"] - s["q1"]) * 1e3)
            hi.append((s["q3"] - s["median"]) * 1e3)
        bars = ax.bar(
            xs,
            ys,
            width * 0.92,
            color=style[name][0],
            label=name,
            yerr=[lo, hi],
            capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "#333"},
        )
        for b, v, up in zip(bars, ys, hi, strict=True):
            ax.annotate(
                _short_ms(v),
                (b.get_x() + b.get_width() / 2, v + up),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90,
            )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_ms_formatter())
    ax.set_xticks(range(len(spec)))
    ax.set_xticklabels([_spec_label(result, w) for w in spec])
    ax.set_ylabel("median time per STDP step (log scale)")
    ax.set_title("Time per STDP step by workload (lower is better)")
    ax.margins(y=0.3)
    ax.legend(title="runner", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", visible=False)
    return _save(fig, out / "time_by_workload.png")


def _spec_label(result: dict[str, Any], name: str) -> str:
    w = next(w for w in result["workloads"] if w["name"] == name)
    c = w["case"].split("-")  # e.g. s1-same-k5x5-m28x28-c8to16-n32-...: stride, padding, kernel, map, channels, batch
    return f"{name}\n{c[5][1:]}×{c[3][1:]} {c[4][1:].replace('to', '→')} {c[2]} {c[0]}"


def speedup(result: dict[str, Any], out: Path) -> Path | None:
    """Speedup of each non-baseline runner over each baseline, per SPEC workload (log scale)."""
    spec = [w["name"] for w in result["workloads"] if w["group"] == "spec"]
    ok = _ok(result)
    peers = baselines(result)
    fast = [n for n in _measured_runners(result, spec) if n not in peers]
    bases = [b for b in peers if any((w, b) in ok for w in spec)]
    pairs = [(f, b) for f in fast for b in bases]
    if not spec or not pairs:
        return None
    plt, style = _plt(), _style(result)
    fig, ax = plt.subplots(figsize=(max(7.0, 2.2 * len(spec) + 2), 5.0))
    width = 0.8 / len(pairs)
    hatches = ["", "//", "..", "xx"]
    for j, (f, b) in enumerate(pairs):
        xs, ys = [], []
        for i, w in enumerate(spec):
            r = ok.get((w, f))
            if r and b in r["speedup"]:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(r["speedup"][b])
        bars = ax.bar(
            xs,
            ys,
            width * 0.92,
            color=style[f][0],
            hatch=hatches[bases.index(b) % len(hatches)],
            edgecolor="white",
            label=f"{f} vs {b}",
        )
        for bar, v in zip(bars, ys, strict=True):
            ax.annotate(
                f"{v:.3g}×",
                (bar.get_x() + bar.get_width() / 2, v),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90 if len(pairs) > 3 else 0,
            )
    ax.axhline(1.0, color="#333", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(spec)))
    ax.set_xticklabels([_spec_label(result, w) for w in spec])
    ax.set_ylabel("speedup (baseline time / backend time, log)")
    ax.set_title("Speedup per STDP step over each baseline (higher is better; dashed line = parity)")
    ax.margins(y=0.3 if len(pairs) > 3 else 0.2)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", visible=False)
    return _save(fig, out / "speedup.png")


def achieved_vs_peak(result: dict[str, Any], out: Path) -> Path | None:
    """Horizontal bars of GFLOP/s per runner for SPEC workloads and sweep base points, against the peak."""
    ws = [w for w in result["workloads"] if w["group"] == "spec" or w["name"].endswith("/base")]
    ok = _ok(result)
    names = [w["name"] for w in ws]
    runners = _measured_runners(result, names)
    peak = result["peak"].get("cpu_peak_gflops")
    if not ws or not runners:
        return None
    plt, style = _plt(), _style(result)
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(ws) * len(runners) + 2.0))
    h = 0.8 / len(runners)
    best = 0.0
    for j, name in enumerate(runners):
        ys, vs = [], []
        for i, w in enumerate(names):
            r = ok.get((w, name))
            if r and r["gflops"]:
                ys.append(i - 0.4 + h * (j + 0.5))
                vs.append(r["gflops"])
        best = max([best, *vs])
        bars = ax.barh(ys, vs, h * 0.9, color=style[name][0], label=name)
        for b, v in zip(bars, vs, strict=True):
            pct = f" ({_pct(100 * v / peak)})" if peak else ""
            ax.annotate(
                f"{v:.3g}{pct}",
                (v, b.get_y() + b.get_height() / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
    if peak:
        ax.axvline(peak, color="#000", lw=1.5, ls="--", label=f"float32 GEMM peak {peak:.4g} GFLOP/s")
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("achieved GFLOP/s (log scale; label: GFLOP/s and % of peak)")
    ax.set_title("Achieved throughput against the machine's measured peak")
    ax.set_xlim(right=max(best, peak or 0) * 4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(axis="y", visible=False)
    return _save(fig, out / "achieved_vs_peak.png")


def scaling(result: dict[str, Any], fam: str, ws: list[dict[str, Any]], out: Path) -> Path | None:
    """Top row: time per call vs each swept dimension (log-log); bottom row: GFLOP/s."""
    if not ws:
        return None
    ok = _ok(result)
    runners = _measured_runners(result, [w["name"] for w in ws])
    dims = [d for d in SWEEP_DIMS if any(dd == d for w in ws for dd, _ in w["sweeps"])]
    if not runners or not dims:
        return None
    plt, style = _plt(), _style(result)
    fig, axes = plt.subplots(2, len(dims), figsize=(max(7.0, 3.3 * len(dims) + 1), 7.2), squeeze=False, sharex="col")
    for c, dim in enumerate(dims):
        pts = sorted(((v, w["name"]) for w in ws for d, v in w["sweeps"] if d == dim))
        for name in runners:
            xs, ts, gs = [], [], []
            for v, wn in pts:
                r = ok.get((wn, name))
                if r:
                    xs.append(v)
                    ts.append(r["stats"]["median"] * 1e3)
                    gs.append(r["gflops"])
            color, marker = style[name]
            axes[0, c].plot(xs, ts, marker=marker, color=color, label=name, lw=1.8, ms=6)
            axes[1, c].plot(xs, gs, marker=marker, color=color, label=name, lw=1.8, ms=6)
        for row in (0, 1):
            ax = axes[row, c]
            ax.set_xscale("log")
            ax.set_yscale("log")
            vals = [v for v, _ in pts]
            ax.set_xticks(vals)
            ax.set_xticklabels([f"{v:g}" for v in vals])
            ax.minorticks_off()
        axes[0, c].yaxis.set_major_formatter(_ms_formatter())
        axes[0, c].set_title(_DIM_LABEL[dim])
        axes[1, c].set_xlabel(_DIM_LABEL[dim])
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
