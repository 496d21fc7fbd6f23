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


# Pilot.press() waits for the app to go idle twice per key and Pilot.pause() once:
# textual._wait.wait_for_idle sleeps SLEEP_GRANULARITY (20 ms) at a time until the
# process used under SLEEP_IDLE (1 ms) of CPU in one sleep.  Most keys are handled in
# well under a millisecond, so tests slept ~40 ms a key.  5 ms sleeps with the same
# 1 ms threshold still wait until the key's handlers are done (the loop runs them
# during the sleep; a busy one sets the CPU over the threshold and it sleeps again).
import textual._wait as _textual_wait  # noqa: E402

_textual_wait.SLEEP_GRANULARITY = 1 / 200
