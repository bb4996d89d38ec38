"""Trajectory conformance: ``T`` steps of the seed synapse, each step's ``W'`` feeding the next.

A single call can agree while thousands of steps drift (weights stored too coarsely, an update
applied twice now and then). This runs ``T`` calls of ``Backend.stdp_step`` on what a simulation
feeds it (Bernoulli spikes, traces ``trace·decay + spike``, ``x`` the presynaptic spike array) and
compares every output of every step with the float64 reference trajectory from the same start.

The bound per element propagates through the update (1-Lipschitz clip, ``L = |1 - w_decay|``):
``E_{t+1} = L·E_t + B_t + b_t``, ``B_t`` the single-call bound of ``W'`` at the backend's own
state, ``b_t`` the reference's float64 share; ``y`` and ``dX`` carry ``E_t`` through their
operators. The derivation is in ``docs/conformance.md``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case, case_from_text, dtype_of, make_inputs
from convstdp.conformance.checks import check_case, x64_scope
from convstdp.conformance.expectation import expect
from convstdp.present import fmt_num, fmt_time, table
from convstdp.reference import ops as ref

__all__ = ["DEFAULT_CASE", "DEFAULT_STEPS", "TRACE_DECAY", "OUTPUTS", "Trajectory", "simulation_inputs", "plot"]
__all__ += ["initial_weights", "run_trajectory", "self_test", "self_test_steps", "to_json", "render", "usable_case"]

DEFAULT_CASE = "s2-same-k5x5-m8x8-c4to3-n2-f32-sim-bool-d0.1-sim"  # the "sim" set: eta, w_decay, w_bound > 0
DEFAULT_STEPS = 50
TRACE_DECAY = 0.5  # with the sim set and 10 % spikes the weights potentiate slowly into the upper clip
OUTPUTS = ("y", "W'", "dW", "dX")
_F64 = tol.POLICY["float64"]


def simulation_inputs(case: Case, steps: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """``steps`` seeded step inputs: spikes Bernoulli(``case.density``), traces ``trace·decay + spike``."""
    g = case.geometry()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"trajectory/{case.name}".encode())])
    pre_t = np.zeros(g.x_shape, dtype_of(case, "pre_trace"))
    post_t = np.zeros(g.y_shape, dtype_of(case, "post_trace"))
    d_out = np.zeros(g.y_shape, dtype_of(case, "d_out"))  # the expectation's single-op inputs, unused here
    for _ in range(steps):
        pre, post = rng.random(g.x_shape) < case.density, rng.random(g.y_shape) < case.density
        pre_t = (pre_t * pre_t.dtype.type(TRACE_DECAY) + pre).astype(pre_t.dtype)
        post_t = (post_t * post_t.dtype.type(TRACE_DECAY) + post).astype(post_t.dtype)
        pre, post = (s if case.spikes == "bool" else s.astype(dtype_of(case, "spike")) for s in (pre, post))
        yield dict(x=pre, d_out=d_out, pre_spike=pre, pre_trace=pre_t, post_spike=post, post_trace=post_t)


def initial_weights(case: Case, seed: int = 0) -> np.ndarray:
    """``W_0 ~ U(0, w_bound)`` (``U(0, 1)`` without a bound): a few elements clip at step 1."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"trajectory-w0/{case.name}".encode())])
    top = case.params["w_bound"] or 1.0
    return rng.uniform(0.0, top, case.geometry().kernel_shape).astype(dtype_of(case, "kernel"))


@dataclass
class Trajectory:
    """One backend's trajectory: per output, the worst error/bound of every step run (step 1 first)."""

    backend: str
    case: str
    steps: int
    precision: str
    ratios: dict[str, list[float]] = field(default_factory=lambda: {o: [] for o in OUTPUTS})
    w_abs_error: list[float] = field(default_factory=list)  # max |W_backend - W_ref| per step
    clipped: list[float] = field(default_factory=list)  # share of the reference's W' at a clip value
    first_failure: int | None = None  # 1-based step
    error: str | None = None
    backend_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def steps_run(self) -> int:
        return len(self.w_abs_error)

    @property
    def ok(self) -> bool:
        return self.error is None and self.first_failure is None and self.steps_run == self.steps

    def worst(self, output: str | None = None) -> tuple[float, str, int]:
        """``(ratio, output, step)`` of the worst step (of ``output``, else of any output)."""
        cand = [(r, o, i + 1) for o in ([output] if output else OUTPUTS) for i, r in enumerate(self.ratios[o])]
        return max(cand, default=(0.0, output or "", 0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratios"] = {o: [float(f"{r:.4g}") for r in v] for o, v in self.ratios.items()}
        d["w_abs_error"] = [float(f"{v:.4g}") for v in self.w_abs_error]
        d["clipped"] = [round(v, 4) for v in self.clipped]
        worst = self.worst()
        d.update(ok=self.ok, steps_run=self.steps_run, worst_ratio=worst[0], worst_output=worst[1], worst_step=worst[2])
        return d


def _reference_step(w: np.ndarray, inp: dict[str, np.ndarray], case: Case) -> dict[str, np.ndarray]:
    kw = dict(stride=case.stride, padding=case.padding)
    y = ref.deconv2d(inp["x"], w, **kw)
    stdp = (inp["pre_spike"], inp["pre_trace"], inp["post_spike"], inp["post_trace"])
    w_new, dw = ref.stdp_update(w, *stdp, **kw, **case.params)
    return {"y": y, "W'": w_new, "dW": dw, "dX": ref.deconv2d_dx(w_new, inp["post_spike"], **kw)}


def _bounds(case: Case, inp: dict[str, np.ndarray], w: np.ndarray, e: np.ndarray, pol: tol.Policy) -> dict:
    """Per output the bound of this step (docs/conformance.md) given ``E_t = e``, the backend at ``w``."""
    step = expect(case, {**inp, "kernel": w}).ops["stdp_step"]
    kw = dict(stride=case.stride, padding=case.padding)

    def b(name: str) -> np.ndarray:
        return tol.bound(step[name].scale, pol) + tol.bound(step[name].scale, _F64)

    w_decay = case.params["w_decay"]
    lip = abs(1.0 - w_decay) if w_decay > 0 else 1.0
    carried = lip * e + tol.bound(step["W'"].scale, _F64)
    return {
        "y": b("y") + ref.deconv2d(np.abs(inp["x"].astype(np.float64)), e, **kw),
        "W'": lip * e + b("W'"),
        "dW": b("dW"),
        "dX": b("dX") + ref.deconv2d_dx(carried, np.abs(inp["post_spike"].astype(np.float64)), **kw),
    }


def _contract(outs: Sequence[np.ndarray], refs: dict[str, np.ndarray], dtype: np.dtype) -> str | None:
    """Why the outputs break the contract (count, shape, dtype: every output has W's), else ``None``."""
    if len(outs) != len(OUTPUTS):
        return f"stdp_step returned {len(outs)} arrays, expected {len(OUTPUTS)}"
    for name, got in zip(OUTPUTS, outs, strict=True):
        if got.shape != refs[name].shape or got.dtype != dtype:
            want = f"{refs[name].shape} {np.dtype(dtype)}"
            return f"{name} is {got.shape} {got.dtype}, expected {want} (SPEC §4: the dtype stays)"
    return None


def _clipped(w: np.ndarray, case: Case) -> float:
    top = case.params["w_bound"]
    return float(np.mean((w == 0.01) | (w == top - 0.01))) if top > 0 and w.size else 0.0


def _call(backend: Any, case: Case, w: Any, inp: dict, tr: Trajectory) -> tuple[list, list, str | None]:
    """The backend's step on ``w`` → ``(outputs as returned, as NumPy, None)``, or ``([], [], why it failed)``."""
    stdp = [inp[a] for a in ("pre_spike", "pre_trace", "post_spike", "post_trace")]
    kw = dict(stride=case.stride, padding=case.padding, **case.params)
    t1 = time.perf_counter()
    try:
        with x64_scope(case):
            native = list(backend.stdp_step(w, inp["x"], *stdp, **kw))
            outs = [np.asarray(o) for o in native]  # also waits for asynchronous work, timed with it
    except Exception as err:  # recorded, the trajectory stops
        return [], [], f"{type(err).__name__}: {err}"
    tr.backend_seconds += time.perf_counter() - t1
    return native, outs, None


def _record(tr: Trajectory, t: int, outs: list[np.ndarray], refs: dict, bounds: dict, case: Case) -> None:
    for name, got in zip(OUTPUTS, outs, strict=True):
        err = np.abs(got.astype(np.float64) - refs[name])
        tr.ratios[name].append(float(np.max(tol.ratio(err, bounds[name]), initial=0.0)))
    tr.w_abs_error.append(float(np.max(np.abs(outs[1].astype(np.float64) - refs["W'"]), initial=0.0)))
    tr.clipped.append(_clipped(refs["W'"], case))
    if tr.first_failure is None and not max(tr.ratios[o][-1] for o in OUTPUTS) <= 1.0:
        tr.first_failure = t


def run_trajectory(
    backend: Any, case: Case, steps: int, *, seed: int = 0, precision: str = "highest", progress: Any = None
) -> Trajectory:
    """``steps`` steps of ``backend.stdp_step`` against the float64 reference trajectory, checked at
    ``precision`` (the registry's or the user's, never the backend's own)."""
    tr, t0 = Trajectory(backend.name, case.name, steps, precision), time.perf_counter()
    w = initial_weights(case, seed)
    w_ref, e, dtype = w.astype(np.float64), np.zeros(w.shape), w.dtype
    pol = tol.policy_for(dtype, precision)
    for t, inp in enumerate(simulation_inputs(case, steps, seed), start=1):
        refs = _reference_step(w_ref, inp, case)
        bounds = _bounds(case, inp, np.array(w), e, pol)  # a copy first: a backend may donate its buffer
        native, outs, why = _call(backend, case, w, inp, tr)
        why = why or _contract(outs, refs, dtype)
        if why:
            tr.error = f"step {t}: {why}"
            break
        _record(tr, t, outs, refs, bounds, case)
        w, w_ref, e = native[1], refs["W'"], bounds["W'"]
        if progress is not None:
            progress.advance(f"{backend.name} step {t}")
    tr.seconds = time.perf_counter() - t0
    return tr


def _self_test_row(bug_id: str, impl: type, case: Case, steps: int, seed: int, progress: Any) -> tuple[dict, Any]:
    from convstdp.backends import Backend
    from convstdp.conformance.broken import ReferenceWrapper

    inputs = make_inputs(case, seed)
    single = check_case(Backend(f"broken:{bug_id}", impl()), case, inputs, expect(case, inputs), seed=seed)
    single_ok = all(r.ok for r in single)
    need = getattr(impl, "first_wrong_step", 0)
    tr = run_trajectory(Backend(f"broken:{bug_id}", impl()), case, max(steps, need), seed=seed, progress=progress)
    control = impl is ReferenceWrapper
    at = tr.first_failure
    ratio = max(tr.ratios[o][at - 1] for o in OUTPUTS) if at else tr.worst()[0]
    row = dict(
        bug=bug_id,
        description=(impl.__doc__ or "").strip().split("\n")[0],
        single_call_ok=single_ok,
        trajectory_ok=tr.ok,
        first_failure=at,
        expected_step=need or None,
        ratio=ratio,
        steps=tr.steps,
        ok=single_ok and tr.ok == control,
    )
    return row, tr


def self_test_steps(steps: int) -> int:
    """Steps :func:`self_test` runs in all (the control and each bug, each at least as long as it needs)."""
    from convstdp.conformance.broken import TRAJECTORY_BUGS

    return steps + sum(max(steps, getattr(b.impl, "first_wrong_step", 0)) for b in TRAJECTORY_BUGS)


def self_test(case: Case, steps: int, *, seed: int = 0, progress: Any = None) -> dict[str, Any]:
    """The control and every :data:`~convstdp.conformance.broken.TRAJECTORY_BUGS` backend: each must
    pass the single-call check on ``case``; the control must pass the trajectory and each bug fail
    it (each runs for at least the steps its bug needs to show: ``impl.first_wrong_step``)."""
    from convstdp.conformance.broken import TRAJECTORY_BUGS, ReferenceWrapper

    rows, runs = [], []
    for bug_id, impl in [("none (control)", ReferenceWrapper), *((b.id, b.impl) for b in TRAJECTORY_BUGS)]:
        row, tr = _self_test_row(bug_id, impl, case, steps, seed, progress)
        rows.append(row)
        runs.append(tr.to_dict())
    return {"ok": all(r["ok"] for r in rows), "rows": rows, "runs": runs}


# ----------------------------------------------------------------------------- records


def _summary_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per trajectory: worst error/bound per output, where, the last W', first failure, times."""
    rows = []
    for r in runs:
        worst = [fmt_num(max((float(v) for v in r["ratios"][o]), default=0.0)) for o in OUTPUTS]
        fail = r["error"] or (f"step {r['first_failure']}" if r["first_failure"] else "-")
        last = fmt_num(float(r["ratios"]["W'"][-1])) if r["ratios"]["W'"] else "-"
        rows.append(
            [
                r["backend"],
                f"{r['steps_run']}/{r['steps']}",
                *worst,
                f"{r['worst_step']} ({r['worst_output']})",
                last,
                fail,
                fmt_time(r["backend_seconds"]),
                fmt_time(r["seconds"]),
            ]
        )
    return rows


def to_json(
    runs: Sequence[Trajectory],
    case: Case,
    *,
    steps: int,
    seed: int,
    argv: Sequence[str],
    self_test_doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run as one JSON-able dict (schema ``convstdp.conformance.trajectory`` version 1); the CLI
    adds ``grid_problems`` and ``skipped`` (unavailable backends and why)."""
    from convstdp.conformance.report import head

    return {
        **head("convstdp.conformance.trajectory", argv),
        "case": case.to_dict(),
        "steps": steps,
        "seed": seed,
        "trace_decay": TRACE_DECAY,
        "bound": "E_{t+1} = |1 - w_decay| E_t + B_t (single-call W' bound at the backend's state) + float64 share; "
        "y, dX carry E_t through deconv2d(|x|, .), dX(., |post|); dW: its single-call bound",
        "policy": {k: tol.POLICY[k].to_dict() for k in ("float32", "float64")},
        "runs": [t.to_dict() for t in runs],
        "self_test": self_test_doc,
        "ok": all(t.ok for t in runs) and (self_test_doc is None or self_test_doc["ok"]),
    }


def render(doc: dict[str, Any], fmt: str = "text", plot_file: str | None = None) -> str:
    """A :func:`to_json` record as terminal ``"text"`` or the ``"md"`` report (``plot_file``: the PNG
    to show, relative to the report)."""
    md, env, c = fmt == "md", doc["environment"], doc["case"]
    names = ", ".join(f"`{r['backend']}`" for r in doc["runs"]) or "no backend"
    runs = doc["runs"] or (doc.get("self_test") or {}).get("runs") or [{"clipped": []}]
    clip = runs[0]["clipped"]  # the reference trajectory's, the same for every run
    out = [f"Trajectory conformance: {c['name']}, {doc['steps']} steps, seed {doc['seed']}"]
    if md:
        out = [
            "# convstdp trajectory conformance\n",
            f"**Verdict: {'PASS' if doc['ok'] else 'FAIL'}**: {doc['steps']} steps of the seed synapse step "
            f"(`stdp_step`: y, W', dW, dX), each step's W' feeding the next, on {names} against the float64 "
            f"reference trajectory. convstdp {env['convstdp']}, {env['platform']}, {env['cpu_model']}, "
            f"{env['date_utc']}.\n",
            f"- **Case** `{c['name']}`, STDP parameters {c['params']}, seed {doc['seed']}.",
            f"- **Inputs**: spikes Bernoulli({c['density']:g}) each step; traces `trace = trace*{doc['trace_decay']:g} "
            "+ spike`; x is the presynaptic spike array; W_0 ~ U(0, w_bound), float32.",
            f"- **Clipping exercised**: {100 * max(clip, default=0):.1f} % of the reference's W' at a clip value at "
            f"most, {100 * (sum(clip) / max(len(clip), 1)):.1f} % on average; decay every step.",
            f"- **Bound** (per element, derivation in `docs/conformance.md`): {doc['bound']}.",
            f"- **Command**: `convstdp {' '.join(doc['command'][1:])}`",
        ]
    header = ["backend", "steps", *(f"{o} worst" for o in OUTPUTS), "worst at step", "W' last step", "first failure"]
    if doc["runs"]:
        out += [
            "",
            "## Worst error/bound per backend (pass: <= 1 at every step)\n"
            if md
            else "Worst error/bound per output over the trajectory (pass: <= 1 at every step):",
            table([*header, "backend time", "total time"], _summary_rows(doc["runs"]), fmt),
        ]
    if plot_file:
        out += ["", f"![error/bound per step]({plot_file})"]
    st = doc.get("self_test")
    if st:
        rows = [
            [
                r["bug"],
                "pass" if r["single_call_ok"] else "FAIL",
                "pass" if r["trajectory_ok"] else "fail",
                f"{r['first_failure'] or '-'} ({r['expected_step'] or '-'})",
                fmt_num(r["ratio"]),
                "ok" if r["ok"] else "WRONG",
            ]
            for r in st["rows"]
        ]
        out += [
            "",
            "## Self-test: planted bugs that only a trajectory shows\n"
            if md
            else "Self-test (planted bugs that pass a single call; the trajectory must catch them):",
            table(
                ["bug", "single call", "trajectory", "first failing step (planted)", "err/bound there", "verdict"],
                rows,
                fmt,
            ),
        ]
    out += [f"grid problem: {p}" for p in doc.get("grid_problems", [])]
    out += [f"skipped {name}: {why}" for name, why in doc.get("skipped", {}).items()]
    if not md:
        out.append("\nOK: every trajectory stays within its bound" if doc["ok"] else "\nFAILED")
    return "\n".join(out) + "\n"


def plot(doc: dict[str, Any], path: str) -> None:
    """PNG, log y: per step the worst error/bound over all outputs (solid) and W''s (dotted), per
    backend and planted bug (self-test); the bound is 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    runs = doc["runs"] + ((doc.get("self_test") or {}).get("runs") or [])
    for i, r in enumerate(runs):
        by_out = np.array([[float(v) for v in r["ratios"][o]] for o in OUTPUTS]).reshape(len(OUTPUTS), -1)
        steps = np.arange(1, by_out.shape[1] + 1)
        kw = dict(color=f"C{i % 10}", lw=1.2 if r["backend"].startswith("broken:") else 1.6)
        ax.plot(steps, np.maximum(by_out.max(axis=0), 1e-6), "-", label=f"{r['backend']} (all outputs)", **kw)
        ax.plot(steps, np.maximum(by_out[OUTPUTS.index("W'")], 1e-6), ":", **kw)
    ax.axhline(1.0, color="black", lw=1.5, ls="--", label="bound (fail above)")
    ax.set(yscale="log", xlabel="step", ylabel="max |got - ref| / bound per step (dotted: W' only)")
    ax.set_title(f"trajectory conformance, {doc['steps']} steps: {doc['case']['name']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def usable_case(text: str) -> Case:
    """The case named (or JSON) ``text``, valid for a trajectory (``ValueError`` otherwise)."""
    case = case_from_text(text)
    if case.batch < 1 or case.dtype not in ("f32", "f64"):
        raise ValueError(f"a trajectory needs a batch of at least 1 and one dtype (f32 or f64), got {case.name!r}")
    return case
