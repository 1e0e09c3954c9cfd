"""Waiting for a condition with a deadline, instead of sampling it once."""

import time
from collections.abc import Callable


def eventually(check: Callable[[], object], within: float, what: str, every: float = 0.1):
    """Poll `check` until it is truthy; a probe started at `within` s must pass at the latest.

    Returns the first truthy result. The last probe runs after the deadline, so a
    state promised "within N s" is checked as promised, however slow each probe is.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    result = check()
    assert result, f"{what}: not within {within} s"
    return result
