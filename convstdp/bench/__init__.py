"""Benchmarks: every backend and peer side by side (``convstdp bench``, SPEC §7/§8).

- :mod:`~convstdp.bench.workloads`: the workloads (SPEC §8 and sweeps) as conformance cases plus an
  operator; shared with the pytest-benchmark suite in ``benchmarks/``.
- :mod:`~convstdp.bench.timing`: first call, warm-up, interleaved sampling; :mod:`~convstdp.bench.memory`.
- :mod:`~convstdp.bench.probe`: the measured float32 GEMM peak.
- :mod:`~convstdp.bench.verify`: agreement with the reference before timing.
- :mod:`~convstdp.bench.suite`: one run; :mod:`~convstdp.bench.report`, :mod:`~convstdp.bench.plots`:
  report.md/.json/.html and PNGs; :mod:`~convstdp.bench.cli`: the ``bench`` sub-command.

Optional libraries are imported only when a run needs them.
"""
