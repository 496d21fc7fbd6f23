"""Hypothesis settings profiles, chosen by HYPOTHESIS_PROFILE (default "ci").

ci       bounded and deterministic (derandomize): tests/test_properties.py runs in
         well under a minute on a 2-core machine.
nightly  many more and longer random sessions; failures are kept in the example
         database so that the next run replays them first.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,  # 20 sessions of 40 steps per scenario: CI stays near a minute
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=2000,
    stateful_step_count=100,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Pilot.press(*keys) waits for the app to go idle twice after each key (App._press_keys):
# Textual's wait_for_idle() sleeps SLEEP_GRANULARITY (20 ms) at a time until one
# sleep saw under SLEEP_IDLE (1 ms) of process CPU, so a prompt's typed text slept
# ~40 ms a character: over half of the Pilot tests' time.  Here every one of those
# waits but the very last of a press() sleeps 5 ms at a time: the loop still runs each
# key's handlers to idle before the next key (a busy handler keeps the CPU over the
# threshold and the wait goes on).  The last wait is Textual's own, so a test that
# looks at the screen after press() (or pause(), untouched) sees at least one
# refresh (1/60 s) as before.
import textual._wait as _textual_wait  # noqa: E402
import textual.app as _textual_app  # noqa: E402

_SHORT = 1 / 200
_short_waits = [0]  # how many of App._press_keys' next waits are short
_press_keys = _textual_app.App._press_keys
_wait_for_idle = _textual_app.wait_for_idle


async def _wait_for_idle_in_press(min_sleep: float = _textual_wait.SLEEP_GRANULARITY, max_sleep: float = 1) -> None:
    if _short_waits[0] <= 0:
        return await _wait_for_idle(min_sleep, max_sleep)
    _short_waits[0] -= 1
    granularity, _textual_wait.SLEEP_GRANULARITY = _textual_wait.SLEEP_GRANULARITY, _SHORT
    try:
        await _wait_for_idle(min_sleep, max_sleep)
    finally:
        _textual_wait.SLEEP_GRANULARITY = granularity


async def _press_keys_waiting_less(self, keys) -> None:
    keys = list(keys)
    _short_waits[0] = 2 * len(keys) - 1  # two waits a key; the last one Textual's
    try:
        await _press_keys(self, keys)
    finally:
        _short_waits[0] = 0


_textual_app.wait_for_idle = _wait_for_idle_in_press
_textual_app.App._press_keys = _press_keys_waiting_less
