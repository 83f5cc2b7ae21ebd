"""The ini of a suite run in pytest's pytester: the suite's markers, and the one setting pytest-asyncio
(loaded as a plugin) warns about when unset."""

from __future__ import annotations

INI = "[pytest]\nmarkers =\n    unit\n    integration\n    e2e\nasyncio_default_fixture_loop_scope = function\n"
