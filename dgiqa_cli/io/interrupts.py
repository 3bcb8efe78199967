"""Named points where a test can stop a run exactly, instead of racing it with a timer.

``DGIQA_INTERRUPT_AT="EVENT:N:SIGNAL"`` in a process's environment makes that process send itself
``SIGNAL`` right after the ``N``-th time ``EVENT`` happens, so a test kills or terminates a run at a
known point (after its second row, after its first epoch) however fast or loaded the machine is.

Events: ``row`` (a CSV/JSONL row written whole), ``unit`` (a distributed run's unit file committed),
``checkpoint`` (a training checkpoint saved), ``queued`` (a picture sent to ``dgiqa serve`` waits for its
batch). Unset, as it always is outside tests, :func:`reached` is one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DGIQA_INTERRUPT_AT"
EVENTS = ("row", "unit", "checkpoint", "queued")
_counts: dict[str, int] = {}


def at(event: str, count: int, signal_name: str) -> dict[str, str]:
    """The environment entry that interrupts a child process at ``event`` number ``count`` (for tests)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; choose one of {', '.join(EVENTS)}")
    getattr(signal, signal_name)  # an unknown signal fails here, in the test, not silently in the child
    return {ENV: f"{event}:{count}:{signal_name}"}


def reached(event: str) -> None:
    """Mark that ``event`` happened; signal this process if ``$DGIQA_INTERRUPT_AT`` asks for it now."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, count, signal_name = spec.split(":")
    if name != event:
        return
    _counts[event] = _counts.get(event, 0) + 1
    if _counts[event] == int(count):
        os.kill(os.getpid(), getattr(signal, signal_name))
