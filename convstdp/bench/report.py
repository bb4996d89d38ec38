"""Write a run (the dict from :func:`convstdp.bench.suite.run`) as report.md / .json / .html + PNGs.

The Markdown and HTML pages are rendered from one list of sections (title, text, tables,
images), so they always show the same numbers; ``report.json`` holds every raw figure.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convstdp.bench.memory import headline
from convstdp.bench.suite import baselines, sweep_families
from convstdp.bench.workloads import SWEEP_DIMS
from convstdp.present import fmt_num, fmt_time, table, write_json

MIB = 1024 * 1024


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    level: int = 2


# ----------------------------------------------------------------------------- formatting


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "–"
    return f"{b / MIB:.1f}"


def _results(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["workload"], r["runner"]): r for r in result["results"]}


def _runner_names(result: dict[str, Any]) -> list[str]:
    return [r["name"] for r in result["runners"]]


def _baselines(result: dict[str, Any], exclude: str | None = None) -> list[str]:
    avail = {r["name"] for r in result["runners"] if r["available"]}
    return [b for b in baselines(result) if b in avail and b != exclude]


def status_text(r: dict[str, Any]) -> str:
    if r["status"] == "ok":
        return "capped (1 sample)" if r.get("capped") else "ok"
    return f"{r['status']}: {r['reason']}"


# ----------------------------------------------------------------------------- sections


def _environment(result: dict[str, Any]) -> Section:
    e = result["environment"]
    v = {k: val for k, val in e["versions"].items() if val}
    blas = e["blas"]
    blas_txt = (
        "; ".join(
            f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads, "
            f"{b.get('architecture') or b.get('threading_layer') or ''})"
            for b in blas
        )
        if isinstance(blas, list)
        else str(blas)
    )
    rows = [
        ["date (UTC)", e["date_utc"]],
        ["CPU", f"{e['cpu_model']}, {e['cpus_usable']} usable of {e['cpu_count']} logical CPUs"],
        [
            "load average (1, 5, 15 min) at start / end",
            f"{_loads(e.get('load_average_start'))} / {_loads(e.get('load_average'))}",
        ],
        ["Python / platform", f"{e['python']} / {e['platform']}"],
        ["libraries", ", ".join(f"{k} {val}" for k, val in v.items())],
        ["threads", ", ".join(f"{k}: {val}" for k, val in e["threads"].items()) or "–"],
        ["BLAS (threadpoolctl)", blas_txt],
        ["environment variables", ", ".join(f"{k}={val}" for k, val in e["env"].items()) or "none set"],
        ["git commit", e["git_commit"] or "–"],
        ["run time", fmt_time(result["duration_s"])],
    ]
    text = []
    busy = busy_warning(result)
    if busy:
        text.append(busy)
    return Section("Machine and software", text, [Table(["", ""], rows)])


def busy_warning(result: dict[str, Any]) -> str:
    """A warning when other work loaded the machine (1-minute load average above half its CPUs)."""
    e = result["environment"]
    cpus = e.get("cpus_usable") or 1
    start, end = (la[0] if la else 0.0 for la in (e.get("load_average_start"), e.get("load_average")))
    # at the start this run has only imported; at the end it has kept every CPU busy itself
    if start > 1 + cpus / 2 or end > cpus + 1:
        loads = [start, end]
        return (
            f"Warning: the machine was busy (1-minute load average up to {max(loads):.1f} on {cpus} CPUs, "
            "this run included): timings, and multi-threaded runners especially, are unreliable."
        )
    return ""


def _loads(la: list[float] | None) -> str:
    return ", ".join(f"{v:.2f}" for v in la) if la else "–"


def _runners(result: dict[str, Any]) -> Section:
    rows = []
    checks = result["checks"]
    for r in result["runners"]:
        cs = checks.get(r["name"], [])
        if r["name"] == "reference":
            check = "is the oracle"
        elif cs:
            bad = [c for c in cs if not c["ok"]]
            worst = max(c["worst"] for c in cs)
            check = f"{len(cs) - len(bad)}/{len(cs)} cases agree (worst error {worst:.2g} of its bound)" + (
                f"; FAILS {bad[0]['workload']}: {bad[0]['detail']}" if bad else ""
            )
        else:
            check = "–"
        rows.append(
            [
                r["name"],
                r["kind"],
                "ok" if r["available"] else f"unavailable: {r['reason']}",
                r.get("version", ""),
                ", ".join(r.get("devices", [])),
                r.get("source", ""),
                check,
            ]
        )
    text = [
        "Every runner is checked against the float64 reference on a small version of each distinct "
        "(operator, kernel, stride, padding) before it is timed; a runner that disagrees is not timed there.",
    ]
    return Section(
        "Backends and peers",
        text,
        [Table(["runner", "kind", "status", "version", "devices", "source", "check"], rows)],
    )


def _peak(result: dict[str, Any]) -> Section:
    p = result["peak"]
    rows = [[q["name"], q["device"], str(q["n"]), fmt_num(q["gflops"], 4), fmt_time(q["seconds"])] for q in p["probes"]]
    text = [
        "Peak = the best float32 GEMM rate measured here (square `A @ B`, 2n³ FLOPs, best of several samples); "
        "'% peak' divides a runner's GFLOP/s by it. JAX GPU probes run at `Precision.HIGHEST`."
    ]
    core = result["environment"]["env"].get("OPENBLAS_CORETYPE")
    if core:
        text.append(
            f"OPENBLAS_CORETYPE={core} is set: OpenBLAS then uses that core's kernels, which can be slower "
            "than the CPU allows; NumPy's probe (and the reference) may be held back by it, PyTorch's is not."
        )
    if p.get("skipped"):
        text.append("Probes not run: " + "; ".join(f"{k}: {v}" for k, v in p["skipped"].items()))
    return Section("Measured peak", text, [Table(["probe", "device", "n", "GFLOP/s", "time per matmul"], rows)])


def _row(r: dict[str, Any], baselines: list[str]) -> list[str]:
    s = r["stats"]
    mem, how = headline(r.get("memory"))
    spread = f"{fmt_time(s['q1'])} – {fmt_time(s['q3'])}" if s["median"] is not None else "–"
    n = f"{len(r['samples'])}×{r['inner']}" if r["samples"] else "–"
    sp = [fmt_num(r["speedup"].get(b), 3) + "×" if b in r["speedup"] else "–" for b in baselines]
    return [
        r["runner"],
        fmt_time(s["median"]),
        spread,
        n,
        fmt_num(r["gflops"]),
        fmt_num(r["pct_peak"], 2),
        fmt_time(r["first_call_s"]),
        f"{fmt_bytes(mem)} ({how})" if mem is not None else "–",
        *sp,
    ]


def _workload_table(result: dict[str, Any], wname: str) -> Table:
    res = _results(result)
    baselines = _baselines(result)
    rows = []
    for name in _runner_names(result):
        r = res.get((wname, name))
        if r is None:
            continue
        if r["status"] != "ok":
            rows.append([name, status_text(r)] + [""] * (6 + len(baselines)))
        else:
            rows.append(_row(r, baselines))
    header = [
        "runner",
        "median",
        "IQR (q1 – q3)",
        "samples×inner",
        "GFLOP/s (dense-eq.)",
        "% GEMM peak",
        "first call",
        "peak mem MiB",
        *[f"× vs {b}" for b in baselines],
    ]
    return Table(header, rows)


def _headline(result: dict[str, Any]) -> Section:
    """Speedup of each non-baseline runner against each baseline, SPEC workloads."""
    res = _results(result)
    spec = [w for w in result["workloads"] if w["group"] == "spec"]
    fast = [r["name"] for r in result["runners"] if r["available"] and r["kind"] != "peer"]
    rows = []
    for w in spec:
        for f in fast:
            r = res.get((w["name"], f))
            if not r or r["status"] != "ok":
                continue
            rows.append(
                [w["name"], f, fmt_time(r["stats"]["median"])]
                + [fmt_num(r["speedup"].get(b)) + "×" if b in r["speedup"] else "–" for b in _baselines(result)]
            )
    busy = [busy_warning(result)] if busy_warning(result) else []
    if not rows:
        return Section("Headline", [*busy, "No fast backend measured a SPEC §8 workload in this run."])
    return Section(
        "Headline: STDP step, SPEC §8 workloads",
        [
            *busy,
            "Speedup = the baseline's median time per step divided by the backend's, measured in the same run, "
            "interleaved.",
        ],
        [Table(["workload", "backend", "median per step", *[f"× vs {b}" for b in _baselines(result)]], rows)],
    )


def _spec_sections(result: dict[str, Any]) -> list[Section]:
    out = []
    for w in result["workloads"]:
        if w["group"] != "spec":
            continue
        txt = [
            f"{w['describe']}; {w['flops'] / 1e6:.4g} MFLOP per call, dense-equivalent "
            f"({w['flops'] // w['pass_flops']} passes), of which {w['flops'] * w['density'] / 1e6:.4g} MFLOP "
            f"touch a non-zero spike (the work a sparse-driven kernel does); conformance case `{w['case']}`."
        ]
        out.append(Section(w["name"], txt, [_workload_table(result, w["name"])], level=3))
    return out


def _sweep_sections(result: dict[str, Any]) -> list[Section]:
    res = _results(result)
    names = [r["name"] for r in result["runners"] if r["available"]]
    out = []
    for fam, ws in sweep_families(result).items():
        rows = []
        for dim in SWEEP_DIMS:
            pts = sorted(((v, w) for w in ws for d, v in w["sweeps"] if d == dim), key=lambda t: t[0])
            for v, w in pts:
                cells = []
                for n in names:
                    r = res.get((w["name"], n))
                    if r is None or r["status"] != "ok":
                        cells.append("–" if r is None else r["status"])
                    else:
                        cells.append(f"{fmt_time(r['stats']['median'])} ({fmt_num(r['gflops'], 2)})")
                rows.append([dim, fmt_num(v), fmt_num(w["flops"] / 1e6, 3), *cells])
        what = (
            "the step on N=16, 16×16, Ci=Co=16, k=5, stride 2, SAME, density 0.1, one dimension varied"
            if fam == "step"
            else f"the {fam} step at spike densities from 0.01 to 1 (traces dense)"
        )
        out.append(
            Section(
                f"Sweep: {fam}",
                [f"Cells: median time per step (dense-equivalent GFLOP/s). Sweep of {what}."],
                [Table(["dimension", "value", "MFLOP", *names], rows)],
                [(f"sweep_{fam}.png", f"{fam}: time per step and GFLOP/s along the sweep")],
                level=3,
            )
        )
    return out


def _method() -> Section:
    return Section(
        "How this was measured",
        [
            "An STDP step is `Backend.stdp_step` (SPEC §8): deconv2d + stdp_update (two dK) + backtransmit (dX) "
            "through the updated kernel; a backend's fused step is used when it has one. GFLOP/s are "
            "dense-equivalent for every runner: FLOPs of one pass are 2·N·H·W·Ci·Co·kh·kw on the input map "
            "whatever the spike density; a step counts four passes, stdp_update two, the other operators one. "
            "'% GEMM peak' divides that by the measured float32 GEMM peak. A sparse-driven kernel (numba at low "
            "density) does only the multiply-adds that touch a non-zero spike, about density × the dense count "
            "(each section states it), so its dense-equivalent rate can exceed the GEMM peak.",
            "Inputs are what a simulation feeds a step (SPEC §8; the conformance case named in each section, "
            "checked at full size before timing): spikes float32 0/1 at the stated density, x the presynaptic "
            "spike array itself, traces dense and positive, kernels positive. PyTorch is timed as its users run "
            "it, on 4-D tensors in its own layout (NCHW, its own weight layout) converted once outside the timed "
            "region, in whichever memory format (contiguous or channels_last) its step runs faster on that "
            "workload (both timed when the tensors are prepared), at the "
            "same thread count as the machine's usable CPUs; ngc-learn's step is its own functions jitted as one "
            "whole step.",
            "Per workload each runner makes a first call (its compile time, for JIT backends, is in 'first call'), "
            "then warm-up calls; the inner loop is sized so that one sample lasts at least a few milliseconds. "
            "Samples are then taken round-robin over all runners, rotating the order each round, so runners share "
            "the machine's load; the table gives the median time per call and the interquartile range of samples. "
            "Runners whose outputs are jax.Array get device arrays as inputs (converted once, outside the timing) "
            "and every timed call blocks until all outputs are ready. A runner slower than the cap per call "
            "(30 s by default, a guard against hangs) would be sampled once ('capped'); every other figure comes "
            "from at least 5 samples. The NumPy reference is the oracle, not a contender: it is timed only up to "
            "1 GFLOP per call.",
            "Peak memory is the larger of two one-call measurements, labelled: 'rss' = rise of the process's "
            "resident-set high-water mark during the call (VmHWM reset via /proc/self/clear_refs; sees every "
            "allocator but not memory reused from an allocator's cache), 'traced' = tracemalloc peak (NumPy and "
            "Python allocations only); on a GPU, 'device' = JAX's peak_bytes_in_use.",
            "Speedup '× vs B' = B's median divided by this runner's, from the same run.",
        ],
    )


def sections(result: dict[str, Any]) -> list[Section]:
    figs = [
        ("time_by_workload.png", "Median time per STDP step, SPEC §8 workloads (log scale; bars show the IQR)"),
        ("speedup.png", "Speedup of each backend over each baseline, same run"),
        ("achieved_vs_peak.png", "Achieved GFLOP/s against the measured float32 GEMM peak"),
    ]
    spec = Section("SPEC §8 workloads (STDP step)", images=figs)
    sweep_sections = _sweep_sections(result)
    out = [_headline(result), spec, *_spec_sections(result)]
    if sweep_sections:
        out += [Section("Scaling sweeps"), *sweep_sections]
    return out + [_runners(result), _peak(result), _environment(result), _method()]


# ----------------------------------------------------------------------------- renderers


def to_markdown(result: dict[str, Any], images: set[str]) -> str:
    e = result["environment"]
    parts = [
        f"# convstdp benchmark report\n\n{e['cpu_model']} ({e['cpus_usable']} CPUs), {e['date_utc']}; "
        f"full data in `report.json`, figures also in `report.html`."
    ]
    for s in sections(result):
        parts.append("#" * s.level + " " + s.title)
        parts += s.text
        parts += [table(t.header, t.rows, "md") for t in s.tables]
        parts += [f"![{cap}]({name})" for name, cap in s.images if name in images]
    return "\n\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;vertical-align:top}th{background:#f0f0f0}
td.r{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even){background:#fafafa}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:0.9em}
code{background:#f4f4f4;padding:0 3px}
"""


def _html_text(t: str) -> str:
    """Escape ``t``; spans between backticks become ``<code>``."""
    parts = html.escape(t).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(result: dict[str, Any], images: dict[str, bytes]) -> str:
    e = result["environment"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>convstdp benchmark report</title>",
        f"<style>{_CSS}</style></head><body><h1>convstdp benchmark report</h1>",
        f"<p>{html.escape(e['cpu_model'])} ({e['cpus_usable']} CPUs), {html.escape(e['date_utc'])}; "
        "raw figures in <code>report.json</code>.</p>",
    ]
    for s in sections(result):
        parts.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        parts += [f"<p>{_html_text(t)}</p>" for t in s.text]
        parts += [table(t.header, t.rows, "html") for t in s.tables]
        for name, cap in s.images:
            if name in images:
                b64 = base64.b64encode(images[name]).decode()
                parts.append(
                    f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{b64}'>"
                    f"<figcaption>{html.escape(cap)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_text(result: dict[str, Any]) -> str:
    """The console summary: one line per (workload, runner)."""
    res = _results(result)
    baselines = _baselines(result)
    rows = []
    for w in result["workloads"]:
        for n in _runner_names(result):
            r = res.get((w["name"], n))
            if r is None:
                continue
            if r["status"] != "ok":
                rows.append([w["name"], n, status_text(r)[:60], "", "", "", *[""] * len(baselines)])
                continue
            rows.append(
                [
                    w["name"],
                    n,
                    fmt_time(r["stats"]["median"]),
                    fmt_num(r["gflops"]),
                    fmt_num(r["pct_peak"], 2),
                    fmt_time(r["first_call_s"]),
                    *[fmt_num(r["speedup"].get(b)) + "×" if b in r["speedup"] else "" for b in baselines],
                ]
            )
    peak = result["peak"].get("cpu_peak_gflops")
    head = ["workload", "runner", "median", "GFLOP/s", "% peak", "first call", *[f"vs {b}" for b in baselines]]
    return (
        table(head, rows) + f"\n\nCPU float32 GEMM peak: {fmt_num(peak, 4)} GFLOP/s; "
        f"run took {fmt_time(result['duration_s'])}"
    )


def write(result: dict[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write report.json, the PNG plots, report.md and report.html into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    paths.append(write_json(out / "report.json", result))
    images: dict[str, bytes] = {}
    if plots:
        from convstdp.bench import plots as _plots

        for path in _plots.make_all(result, out):
            images[path.name] = path.read_bytes()
            paths.append(path)
    p = out / "report.md"
    p.write_text(to_markdown(result, set(images)))
    paths.append(p)
    p = out / "report.html"
    p.write_text(to_html(result, images))
    paths.append(p)
    return paths
