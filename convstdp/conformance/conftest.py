"""Makes ``pytest path/to/convstdp/conformance --backend NAME`` work without the plugin loaded
(see :mod:`convstdp.conformance.pytest_plugin`); defers to the plugin when it is."""

from __future__ import annotations

from typing import Any

from convstdp.conformance import pytest_plugin as _plugin


def pytest_addoption(parser: Any, pluginmanager: Any) -> None:
    if not pluginmanager.is_registered(_plugin):
        _plugin.add_options(parser)


def pytest_generate_tests(metafunc: Any) -> None:
    if not metafunc.config.pluginmanager.is_registered(_plugin):
        _plugin.generate(metafunc)
