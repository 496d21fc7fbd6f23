"""The main screen's compositor: a partial update renders only the rows that changed.

Textual renders a partial update inside the box around all the regions that changed,
and every widget that box touches renders all of its rows on screen (from its line
cache, but each line still goes through the styles cache and the line filters).  A
key changes a line or two of some panes and the status line at the bottom, so that
box was the whole screen: seven panes of lines for a frame that writes a few.  Here
the changed regions are taken in bands of rows, and each widget under a changed
region renders only the rows of its band, at its whole width (a frame's chops are
cut at the widgets' edges, which a narrower crop would not respect); a widget beside
the changes is not rendered at all (chop_rows, which a replay's expect also uses to
render one row).  What is written is the same; tests/test_terminal_cells.py compares
the cells a terminal is left with against a full render.  (textual < 8.3, pinned: this overrides private methods.)
"""

from __future__ import annotations

from collections.abc import Iterable

from textual._compositor import ChopsUpdate, Compositor
from textual.geometry import Region
from textual.strip import Strip


def row_bands(regions: Iterable[Region]) -> list[tuple[int, int]]:
    """The rows of `regions` as disjoint [start, end) bands, adjacent ones joined."""
    bands: list[tuple[int, int]] = []
    for start, end in sorted((r.y, r.bottom) for r in regions if r.height > 0):
        if bands and start <= bands[-1][1]:
            if end > bands[-1][1]:
                bands[-1] = (bands[-1][0], end)
        else:
            bands.append((start, end))
    return bands


def chop_rows(compositor: Compositor, top: int, bottom: int, changed: list[Region] | None = None,
              skip: tuple[type, ...] = ()) -> list[dict[int, Strip | None]]:
    """The chops of rows [top, bottom) as Compositor._render_chops cuts them (a strip
    per cut, the frontmost widget's), with each widget over those rows rendering
    those rows only (Textual has it render all its rows for any crop).  `changed`:
    only widgets under one of these regions render (the others' cells are in no
    span of the update, and a chop at their cuts is not written); `skip`: widget
    classes left out (the replay's expects read under notifications)."""
    cuts = compositor.cuts
    chops: list[dict[int, Strip | None]] = [dict.fromkeys(cuts[y][:-1]) for y in range(top, bottom)]
    rows = Region(0, top, compositor.size.width, bottom - top)
    # Front to back, as the compositor goes: the first strip at a cut wins.
    for widget, (region, clip) in compositor.visible_widgets.items():
        if skip and isinstance(widget, skip):
            continue
        if changed is not None and not any(clip.overlaps(r) for r in changed):
            continue
        shown = region.intersection(clip).intersection(rows)
        if not shown:
            continue
        strips = widget.render_lines(Region(shown.x - region.x, shown.y - region.y, shown.width, shown.height))
        first, last = shown.column_span
        for y, strip in zip(shown.line_range, strips):
            line = chops[y - top]
            at = [cut for cut in cuts[y] if first <= cut <= last]
            for cut, part in zip(at, strip.divide([cut - shown.x for cut in at[1:]])):
                if line.get(cut) is None:
                    line[cut] = part
    return chops


class BandCompositor(Compositor):
    """Partial updates rendered band by band, each widget only in the band's rows."""

    def render_partial_update(self) -> ChopsUpdate | None:
        screen = self.size.region
        update_regions = {r for r in (region.intersection(screen) for region in self._dirty_regions) if r}
        self._dirty_regions.clear()
        if not update_regions:
            return None
        spans = list(self._regions_to_spans(update_regions))
        chops: list[dict[int, Strip | None]] = [dict.fromkeys(cut_set[:-1]) for cut_set in self.cuts]
        for start, end in row_bands(update_regions):
            band = [r for r in update_regions if r.y < end and r.bottom > start]
            chops[start:end] = chop_rows(self, start, end, band)
        chop_ends = [cut_set[1:] for cut_set in self.cuts]
        return ChopsUpdate(chops, spans, chop_ends)
