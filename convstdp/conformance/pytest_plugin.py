"""The conformance suite's pytest plugin: options and parametrization of ``test_suite.py``.

Run the suite against any backend::

    pytest --pyargs convstdp.conformance --backend package.module:factory

pytest parses options before it imports a package given with ``--pyargs``, so ``--backend`` must
come from a plugin loaded first: the ``pytest11`` entry point (``convstdp-conformance``), or
``-p convstdp.conformance.pytest_plugin`` where the entry point is not installed. Running the
suite by path (``pytest path/to/convstdp/conformance --backend ...``) works through the
package's ``conftest.py`` alone. The plugin only parametrizes tests that ask for
``conformance_backend`` / ``conformance_case``, so other test suites are untouched.

Options: ``--backend NAME`` (alias ``--conformance-backend``; repeatable; a registered name or
``package.module:factory``; default ``reference``), ``--conformance-grid quick|full``,
``--conformance-seed N``, ``--conformance-examples N`` (Hypothesis cases per backend; 0 skips).
"""

from __future__ import annotations

from typing import Any


def add_options(parser: Any) -> None:
    group = parser.getgroup("convstdp-conformance", "convstdp conformance suite")
    group.addoption(
        "--backend",
        "--conformance-backend",
        action="append",
        default=[],
        dest="convstdp_backend",
        metavar="NAME",
        help="backend to check: a registered name or package.module:factory (repeatable; default: reference)",
    )
    group.addoption("--conformance-grid", choices=("quick", "full"), default="quick", help="case grid (default quick)")
    group.addoption("--conformance-seed", type=int, default=0, help="seed of the input values (default 0)")
    group.addoption(
        "--conformance-examples",
        type=int,
        default=20,
        help="random (Hypothesis) cases per backend; 0 skips the random test (default 20)",
    )


def generate(metafunc: Any) -> None:
    """Parametrize ``conformance_backend`` (from ``--backend``) and ``conformance_case`` (the grid)."""
    if "conformance_backend" not in metafunc.fixturenames and "conformance_case" not in metafunc.fixturenames:
        return
    from convstdp.conformance.cases import grid

    config = metafunc.config
    if "conformance_backend" in metafunc.fixturenames:
        names = config.getoption("convstdp_backend") or ["reference"]
        metafunc.parametrize("conformance_backend", names, ids=names)
    if "conformance_case" in metafunc.fixturenames:
        cases = grid(config.getoption("conformance_grid"))
        metafunc.parametrize("conformance_case", cases, ids=[c.name for c in cases])


def pytest_addoption(parser: Any) -> None:
    add_options(parser)


def pytest_generate_tests(metafunc: Any) -> None:
    generate(metafunc)
