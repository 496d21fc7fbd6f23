"""Keystroke fixtures: the format (parse, load), key names, and recording.

This part is core: it never imports Textual.  Driving the app with a fixture
(headless or paced, expects, snapshots) is vtdtui.tui.replayer.
"""

from .fixture import DEFAULT_SIZE, Fixture, FixtureError, Step, load, parse
from .keys import KeyNameError, check_key, key_event, typed
from .recorder import Recorder

__all__ = ["DEFAULT_SIZE", "Fixture", "FixtureError", "KeyNameError", "Recorder", "Step", "check_key",
           "key_event", "load", "parse", "typed"]
