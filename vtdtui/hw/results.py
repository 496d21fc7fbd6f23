"""Result records shared by the legacy (unit.py) and scalable-mode (sm.py) walks."""

from __future__ import annotations

from dataclasses import dataclass, field


def _format_trail(trail: list) -> list[str]:
    # Steps are kept as (format, args...) and worded only when someone reads them: a
    # DMA that nobody inspects should not pay for hex formatting.
    return [t if isinstance(t, str) else t[0].format(*t[1:]) for t in trail]


@dataclass
class WalkResult:
    """A side-effect-free walk of the second-level tables."""

    ok: bool
    reason: int = 0
    hpa: int = 0
    shift: int = 12
    r: bool = False
    w: bool = False
    snp: bool = False
    pte: int = 0
    pte_addr: int = 0
    level: int = 0  # the level the walk stopped at
    present: bool = True  # False when it stopped at a not-present entry
    trail: list = field(default_factory=list)
    us: bool = True  # first stage: U/S set at every level (user-accessible)

    @property
    def steps(self) -> list[str]:
        return _format_trail(self.trail)
