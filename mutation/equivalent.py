"""Surviving mutants judged equivalent: (module, line before, line after) → why.

A mutant lands here only after reading it: it changes nothing a caller, an operator or
the code below can observe. mutation/run.py lists every other survivor as a missing test.
"""

from __future__ import annotations

_STATUS = "server/src/datamorph_gateway/status.py"
_DURATION = (
    "duration = duration_pb2.Duration(seconds=int(delay), nanos=int((delay % 1) * 1_000_000_000))"
)

EQUIVALENT: dict[tuple[str, str, str], str] = {
    (
        _STATUS,
        _DURATION,
        _DURATION.replace("1_000_000_000", "1000000001"),
    ): "for a delay in whole nanoseconds, k/10⁹ s, int(k/10⁹ · (10⁹ + 1)) = k + int(k/10⁹) = k:"
    " the same nanos",
    (
        _STATUS,
        "break",
        "continue",
    ): "``used`` only grows, so once one violation is over the bound every later one is too:"
    " ``continue`` keeps none of them, as ``break`` does",
}
