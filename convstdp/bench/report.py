"""Write a run (the dict from :func:`convstdp.bench.suite.run`) as report.md / .json / .html + PNGs.

The Markdown and HTML pages (and the console summary) are rendered from one list of sections
(title, text, tables, images) through :func:`convstdp.present.table`, so they always show the same
numbers; ``report.json`` holds every raw figure.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convstdp.bench.memory import headline
from convstdp.bench.suite import baselines, sweep_families
from convstdp.bench.workloads import SWEEP_DIMS
from convstdp.present import fmt_num, fmt_time, table, write_json

MIB = 1024 * 1024
Table = tuple[list[str], list[list[str]]]  # header, rows of formatted cells


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    level: int = 2


# ----------------------------------------------------------------------------- result rows


def _results(result: dict[str, Any], workloads: list[str], runners: list[str]) -> list[dict[str, Any]]:
    """The result rows of ``workloads`` × ``runners`` that exist, in that order."""
    res = {(r["workload"], r["runner"]): r for r in result["results"]}
    return [res[(w, n)] for w in workloads for n in runners if (w, n) in res]


def _baselines(result: dict[str, Any]) -> list[str]:
    avail = {r["name"] for r in result["runners"] if r["available"]}
    return [b for b in baselines(result) if b in avail]


def _figures(r: dict[str, Any]) -> dict[str, str]:
    """Every formatted figure of one measured result row, by column key."""
    s = r["stats"]
    mem, how = headline(r.get("memory"))
    return {
        "median": fmt_time(s["median"]),
        "iqr": f"{fmt_time(s['q1'])} – {fmt_time(s['q3'])}" if s["median"] is not None else "–",
        "n": f"{len(r['samples'])}×{r['inner']}" if r["samples"] else "–",
        "gflops": fmt_num(r["gflops"]),
        "pct": fmt_num(r["pct_peak"], 2),
        "first": fmt_time(r["first_call_s"]),
        "mem": f"{mem / MIB:.1f} ({how})" if mem is not None else "–",
    }


def _cells(r: dict[str, Any], keys: list[str], bases: list[str], missing: str = "–") -> list[str]:
    """``keys`` of ``r``'s figures, then its speedup over each of ``bases``; its status if it did not measure."""
    if r["status"] != "ok":
        return [f"{r['status']}: {r['reason']}"] + [""] * (len(keys) - 1 + len(bases))
    f = _figures(r)
    return [f[k] for k in keys] + [fmt_num(r["speedup"][b]) + "×" if b in r["speedup"] else missing for b in bases]


# ----------------------------------------------------------------------------- sections


def _environment(result: dict[str, Any]) -> Section:
    e = result["environment"]
    blas = e["blas"]
    if isinstance(blas, list):
        blas = "; ".join(
            f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads, "
            f"{b.get('architecture') or b.get('threading_layer') or ''})"
            for b in blas
        )
    loads = [
        ", ".join(f"{v:.2f}" for v in la) if la else "–" for la in (e.get("load_average_start"), e.get("load_average"))
    ]
    rows = [
        ["date (UTC)", e["date_utc"]],
        ["CPU", f"{e['cpu_model']}, {e['cpus_usable']} usable of {e['cpu_count']} logical CPUs"],
        ["load average (1, 5, 15 min) at start / end", " / ".join(loads)],
        ["Python / platform", f"{e['python']} / {e['platform']}"],
        ["libraries", ", ".join(f"{k} {v}" for k, v in e["versions"].items() if v)],
        ["threads", ", ".join(f"{k}: {v}" for k, v in e["threads"].items()) or "–"],
        ["BLAS (threadpoolctl)", str(blas)],
        ["environment variables", ", ".join(f"{k}={v}" for k, v in e["env"].items()) or "none set"],
        ["git commit", e["git_commit"] or "–"],
        ["run time", fmt_time(result["duration_s"])],
    ]
    return Section("Machine and software", _busy(result), [(["", ""], rows)])


def _busy(result: dict[str, Any]) -> list[str]:
    """A warning when other work loaded the machine (1-minute load average above half its CPUs)."""
    e = result["environment"]
    cpus = e.get("cpus_usable") or 1
    start, end = (la[0] if la else 0.0 for la in (e.get("load_average_start"), e.get("load_average")))
    # at the start this run has only imported; at the end it has kept every CPU busy itself
    if start > 1 + cpus / 2 or end > cpus + 1:
        return [
            f"Warning: the machine was busy (1-minute load average up to {max(start, end):.1f} on {cpus} CPUs, "
            "this run included): timings, and multi-threaded runners especially, are unreliable."
        ]
    return []


def _check_text(name: str, cs: list[dict[str, Any]]) -> str:
    if name == "reference":
        return "is the oracle"
    if not cs:
        return "–"
    bad = [c for c in cs if not c["ok"]]
    fails = f"; FAILS {bad[0]['workload']}: {bad[0]['detail']}" if bad else ""
    worst = max(c["worst"] for c in cs)
    return f"{len(cs) - len(bad)}/{len(cs)} cases agree (worst error {worst:.2g} of its bound){fails}"


def _runners(result: dict[str, Any]) -> Section:
    rows = []
    for r in result["runners"]:
        status = "ok" if r["available"] else f"unavailable: {r['reason']}"
        devices, check = ", ".join(r.get("devices", [])), _check_text(r["name"], result["checks"].get(r["name"], []))
        rows.append([r["name"], r["kind"], status, r.get("version", ""), devices, r.get("source", ""), check])
    text = (
        "Every runner is checked against the float64 reference on a small version of each distinct "
        "(operator, kernel, stride, padding) before it is timed; a runner that disagrees is not timed there."
    )
    header = ["runner", "kind", "status", "version", "devices", "source", "check"]
    return Section("Backends and peers", [text], [(header, rows)])


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
    return Section("Measured peak", text, [(["probe", "device", "n", "GFLOP/s", "time per matmul"], rows)])


def _workload_table(result: dict[str, Any], wname: str) -> Table:
    bases = _baselines(result)
    keys = ["median", "iqr", "n", "gflops", "pct", "first", "mem"]
    rows = [[r["runner"], *_cells(r, keys, bases)] for r in _results(result, [wname], _runner_names(result))]
    header = ["runner", "median", "IQR (q1 – q3)", "samples×inner", "GFLOP/s (dense-eq.)", "% GEMM peak"]
    return [*header, "first call", "peak mem MiB", *[f"× vs {b}" for b in bases]], rows


def _runner_names(result: dict[str, Any]) -> list[str]:
    return [r["name"] for r in result["runners"]]


def _headline(result: dict[str, Any]) -> Section:
    """Speedup of each non-baseline runner against each baseline, SPEC workloads."""
    spec = [w["name"] for w in result["workloads"] if w["group"] == "spec"]
    fast = [r["name"] for r in result["runners"] if r["available"] and r["kind"] != "peer"]
    bases = _baselines(result)
    ok = [r for r in _results(result, spec, fast) if r["status"] == "ok"]
    rows = [[r["workload"], r["runner"], *_cells(r, ["median"], bases)] for r in ok]
    if not rows:
        return Section("Headline", [*_busy(result), "No fast backend measured a SPEC §8 workload in this run."])
    why = (
        "Speedup = the baseline's median time per step divided by the backend's, measured in the same run, interleaved."
    )
    header = ["workload", "backend", "median per step", *[f"× vs {b}" for b in bases]]
    return Section("Headline: STDP step, SPEC §8 workloads", [*_busy(result), why], [(header, rows)])


def _spec_section(result: dict[str, Any], w: dict[str, Any]) -> Section:
    text = (
        f"{w['describe']}; {w['flops'] / 1e6:.4g} MFLOP per call, dense-equivalent "
        f"({w['flops'] // w['pass_flops']} passes), of which {w['flops'] * w['density'] / 1e6:.4g} MFLOP "
        f"touch a non-zero spike (the work a sparse-driven kernel does); conformance case `{w['case']}`."
    )
    return Section(w["name"], [text], [_workload_table(result, w["name"])], level=3)


def _sweep_cell(r: dict[str, Any] | None) -> str:
    if r is None or r["status"] != "ok":
        return "–" if r is None else r["status"]
    return f"{fmt_time(r['stats']['median'])} ({fmt_num(r['gflops'], 2)})"


def _sweep_section(result: dict[str, Any], fam: str, ws: list[dict[str, Any]]) -> Section:
    names = [r["name"] for r in result["runners"] if r["available"]]
    res = {(r["workload"], r["runner"]): r for r in result["results"]}
    rows = []
    for dim in SWEEP_DIMS:
        for v, w in sorted(((v, x) for x in ws for d, v in x["sweeps"] if d == dim), key=lambda t: t[0]):
            cells = [_sweep_cell(res.get((w["name"], n))) for n in names]
            rows.append([dim, fmt_num(v), fmt_num(w["flops"] / 1e6, 3), *cells])
    what = (
        "the step on N=16, 16×16, Ci=Co=16, k=5, stride 2, SAME, density 0.1, one dimension varied"
        if fam == "step"
        else f"the {fam} step at spike densities from 0.01 to 1 (traces dense)"
    )
    return Section(
        f"Sweep: {fam}",
        [f"Cells: median time per step (dense-equivalent GFLOP/s). Sweep of {what}."],
        [(["dimension", "value", "MFLOP", *names], rows)],
        [(f"sweep_{fam}.png", f"{fam}: time per step and GFLOP/s along the sweep")],
        level=3,
    )


_METHOD = [
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
]

_FIGURES = [
    ("time_by_workload.png", "Median time per STDP step, SPEC §8 workloads (log scale; bars show the IQR)"),
    ("speedup.png", "Speedup of each backend over each baseline, same run"),
    ("achieved_vs_peak.png", "Achieved GFLOP/s against the measured float32 GEMM peak"),
]


def sections(result: dict[str, Any]) -> list[Section]:
    sweeps = [_sweep_section(result, fam, ws) for fam, ws in sweep_families(result).items()]
    spec = [_spec_section(result, w) for w in result["workloads"] if w["group"] == "spec"]
    out = [_headline(result), Section("SPEC §8 workloads (STDP step)", images=_FIGURES), *spec]
    if sweeps:
        out += [Section("Scaling sweeps"), *sweeps]
    return out + [_runners(result), _peak(result), _environment(result), Section("How this was measured", _METHOD)]


# ----------------------------------------------------------------------------- renderers


def _render(result: dict[str, Any], fmt: str, images: Any, head: Callable, para: Callable, fig: Callable) -> list[str]:
    """Every section as ``fmt`` parts: ``head(section)``, ``para(text)``, tables, ``fig(name, caption)``."""
    parts = []
    for s in sections(result):
        parts += [head(s), *map(para, s.text), *(table(h, rows, fmt) for h, rows in s.tables)]
        parts += [fig(name, cap) for name, cap in s.images if name in images]
    return parts


def to_markdown(result: dict[str, Any], images: set[str]) -> str:
    e = result["environment"]
    intro = (
        f"# convstdp benchmark report\n\n{e['cpu_model']} ({e['cpus_usable']} CPUs), {e['date_utc']}; "
        "full data in `report.json`, figures also in `report.html`."
    )
    body = _render(result, "md", images, lambda s: "#" * s.level + " " + s.title, str, lambda n, c: f"![{c}]({n})")
    return "\n\n".join([intro, *body]) + "\n"


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
    """``<p>`` of ``t`` escaped; spans between backticks become ``<code>``."""
    parts = html.escape(t).split("`")
    return "<p>" + "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)) + "</p>"


def to_html(result: dict[str, Any], images: dict[str, bytes]) -> str:
    e = result["environment"]

    def figure(name: str, cap: str) -> str:
        b64 = base64.b64encode(images[name]).decode()
        cap = html.escape(cap)
        return f"<figure><img alt='{cap}' src='data:image/png;base64,{b64}'><figcaption>{cap}</figcaption></figure>"

    head = lambda s: f"<h{s.level}>{html.escape(s.title)}</h{s.level}>"
    return "\n".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>convstdp benchmark report</title>",
            f"<style>{_CSS}</style></head><body><h1>convstdp benchmark report</h1>",
            f"<p>{html.escape(e['cpu_model'])} ({e['cpus_usable']} CPUs), {html.escape(e['date_utc'])}; "
            "raw figures in <code>report.json</code>.</p>",
            *_render(result, "html", images, head, _html_text, figure),
            "</body></html>",
        ]
    )


def summary_text(result: dict[str, Any]) -> str:
    """The console summary: one line per (workload, runner)."""
    bases = _baselines(result)
    rows = []
    for r in _results(result, [w["name"] for w in result["workloads"]], _runner_names(result)):
        cells = _cells(r, ["median", "gflops", "pct", "first"], bases, missing="")
        rows.append([r["workload"], r["runner"], cells[0][:60], *cells[1:]])
    head = ["workload", "runner", "median", "GFLOP/s", "% peak", "first call", *[f"vs {b}" for b in bases]]
    peak = fmt_num(result["peak"].get("cpu_peak_gflops"), 4)
    return table(head, rows) + f"\n\nCPU float32 GEMM peak: {peak} GFLOP/s; run took {fmt_time(result['duration_s'])}"


def write(result: dict[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write report.json, the PNG plots, report.md and report.html into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "report.json", result)]
    if plots:
        from convstdp.bench import plots as _plots

        paths += _plots.make_all(result, out)
    images = {p.name: p.read_bytes() for p in paths[1:]}
    (out / "report.md").write_text(to_markdown(result, set(images)))
    (out / "report.html").write_text(to_html(result, images))
    return [*paths, out / "report.md", out / "report.html"]
