"""``convstdp`` command line (SPEC §7): ``backends``, ``conformance``, ``bench``.

Sub-commands other than ``backends`` live with what they drive: each of
``convstdp.conformance.cli`` and ``convstdp.bench.cli`` provides ``configure(parser)`` and
``main(args) -> int``. Usage errors exit 2 (argparse's convention, and SPEC's).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import convstdp
from convstdp import backends as _backends
from convstdp.present import table

_SUBCOMMANDS = {
    "conformance": ("convstdp.conformance.cli", "check backends against the reference"),
    "bench": ("convstdp.bench.cli", "benchmark backends and peers side by side"),
}


def backends_rows() -> list[list[str]]:
    """``[name, status, version, devices]`` for every registered backend; a backend whose own code
    fails to load shows ``error: ...`` (a bug), one whose library is missing ``unavailable: ...``."""
    rows = []
    for name, status in _backends.available_backends().items():
        if status == "ok":
            be = _backends.get_backend(name)
            rows.append([name, "ok", be.version, ", ".join(be.devices())])
        elif status.startswith("error"):
            rows.append([name, status, "", ""])
        else:
            rows.append([name, f"unavailable: {status}", "", ""])
    return rows


def _cmd_backends(args: argparse.Namespace) -> int:
    rows = backends_rows()
    print(table(["backend", "status", "version", "devices"], rows))
    return 1 if any(r[1].startswith("error") for r in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convstdp", description=convstdp.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"convstdp {convstdp.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("backends", help="list backends: name, status or reason, version, devices")
    p.set_defaults(func=_cmd_backends)
    for name, (module_name, help_text) in _SUBCOMMANDS.items():
        module = importlib.import_module(module_name)  # an ImportError here is a bug: let it show
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(func=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
