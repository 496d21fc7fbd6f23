"""The main screen's compositor: a partial update renders only the rows that changed.

Textual renders a partial update inside the box around all the regions that changed,
and every widget that box touches renders all of its rows on screen (from its line
cache, but each line still goes through the styles cache and the line filters).  A
key changes a line or two of some panes and the status line at the bottom, so that
box was the whole screen: seven panes of lines for a frame that writes a few.  Here
the changed regions are taken in bands of rows, and each widget under a changed
region renders only the rows of its band, at its whole width (a frame's chops are
cut at the widgets' edges, which a narrower crop would not respect); a widget beside
the changes is not rendered at all.  What is written is the same; the
tests in tests/test_terminal_cells.py compare the cells a terminal is left with
against a full render.  (textual < 8.3, pinned: this overrides private methods.)
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


class BandCompositor(Compositor):
    """Partial updates rendered band by band, each widget only in the band's rows."""

    def __init__(self) -> None:
        super().__init__()
        self._band: list[Region] | None = None  # the changed regions of the band being rendered

    def render_partial_update(self) -> ChopsUpdate | None:
        update_regions = self._dirty_regions.copy()
        self._dirty_regions.clear()
        screen = self.size.region
        update_regions = {r for r in (region.intersection(screen) for region in update_regions) if r}
        if not update_regions:
            return None
        spans = list(self._regions_to_spans(update_regions))
        is_rendered_line = {y for y, _, _ in spans}.__contains__
        chops: list[dict[int, Strip | None]] | None = None
        for start, end in row_bands(update_regions):
            self._band = [r for r in update_regions if r.y < end and r.bottom > start]
            try:
                band = self._render_chops(Region(0, start, screen.width, end - start), is_rendered_line)
            finally:
                self._band = None
            if chops is None:
                chops = list(band)  # type: ignore[arg-type]
            else:
                chops[start:end] = band[start:end]  # type: ignore[assignment]
        assert chops is not None
        chop_ends = [cut_set[1:] for cut_set in self.cuts]
        return ChopsUpdate(chops, spans, chop_ends)

    def _get_renders(self, crop: Region | None = None) -> Iterable[tuple[Region, Region, list[Strip]]]:
        if crop is None or crop == self.size.region:
            yield from super()._get_renders(crop)
            return
        top, bottom = crop.y, crop.bottom
        changed = self._band if self._band is not None else [crop]
        for widget, (region, clip) in self.visible_widgets.items():
            # A widget beside what changed is not rendered: its cells are in no span
            # of the update, and a chop at its cuts is not written.
            if not any(clip.overlaps(r) for r in changed):
                continue
            # The widget's clip, cut to the band's rows: its region's rows that show.
            y0, y1 = max(clip.y, top), min(clip.bottom, bottom)
            rows = Region(clip.x, y0, clip.width, y1 - y0)
            x, y, width, height = region.intersection(rows)
            if width and height:
                yield region, rows, widget.render_lines(Region(x - region.x, y - region.y, width, height))

