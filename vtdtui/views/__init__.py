"""Plain data for each pane: lines of (text, style token) pairs.

The views read the machine and never change it; they know nothing of Textual.  A
style token names a meaning ("issued", "stale", "on" ...), and the TUI's theme maps
it to colours, so the same views can feed a snapshot, a test or another front end.
"""

from .style import Line, Seg, plain

__all__ = ["Line", "Seg", "plain"]
