"""Recording a session as a fixture that replays to the same state.

Every key is on disk when `key()` returns: the line being built is rewritten in
place and flushed, so the file is always a complete fixture and a kill loses
nothing already typed.  Characters typed into a prompt become `type` lines, the
rest `keys` lines; both deliver the same key events, the split is for reading.

A write that fails (a full disk, a quota) loses nothing either: what is not on disk
is held and written with the next key, and `error` says why it is behind.
"""

from __future__ import annotations

import io
from pathlib import Path

from .fixture import MAX_SIZE, MIN_SIZE
from .keys import KeyNameError, char_to_key, check_key

KEYS_PER_LINE = 16
# A long paste is typed over several `type` lines: a fixture line stays short enough
# for any reader, and rewriting the open line per key stays cheap.
TYPE_PER_LINE = 64
ENDS_LINE = frozenset(("enter", "escape"))


def _token(key: str, character: str | None) -> str | None:
    try:
        check_key(key)
        return key
    except KeyNameError:
        pass
    if character and len(character) == 1 and character.isprintable() and not character.isspace():
        return character
    return None


class Recorder:
    def __init__(self, path: str | Path, *, scenario: str, size: tuple[int, int], note: str = "",
                 exclusive: bool = False) -> None:
        """`exclusive`: the file must not exist yet (FileExistsError), for a name
        the app chose itself and must not write over."""
        self.path = Path(path)
        self.keys = 0
        self.error: OSError | None = None  # the last write failed: the file is behind
        # Unbuffered: every write is a system call, so a kill loses nothing written, and
        # a failed write leaves no half-flushed buffer behind to fail again.
        self._f: io.FileIO | None = io.FileIO(self.path, "x" if exclusive else "w")
        # A terminal outside the range a fixture accepts records at the nearest size
        # that replays (only paging keys depend on the height).
        size = (min(max(size[0], MIN_SIZE[0]), MAX_SIZE[0]), min(max(size[1], MIN_SIZE[1]), MAX_SIZE[1]))
        head = ["# recorded by vtdtui" + (f" {note}" if note else ""),
                "# replay: vtdtui replay THIS-FILE   (--headless for CI)",
                f"size {size[0]}x{size[1]}", f"scenario {scenario}", ""]
        self._start = 0            # the file is complete up to here
        self._done = "\n".join(head)  # finished lines not on disk yet (a failed write)
        self._kind = ""            # "keys" or "type": the open line
        self._items: list[str] = []
        self._text = ""
        self._sync()

    def _write_at(self, offset: int, text: str) -> None:
        f = self._f
        assert f is not None
        data = memoryview(text.encode("utf-8"))
        f.seek(offset)
        while data:  # a raw write may be short (a disk filling up)
            data = data[f.write(data):]
        f.truncate()

    def _sync(self) -> None:
        """Put on disk what is not there yet: finished lines, then the open one."""
        if self._f is None:
            return
        try:
            self._write_at(self._start, self._done + self._render())
        except OSError as exc:
            self.error = exc  # kept in memory; the next key writes it all again
            return
        self.error = None
        self._start += len(self._done.encode("utf-8"))
        self._done = ""

    def _render(self) -> str:
        if self._kind == "type":
            body = self._text.rstrip(" ")
            spaces = len(self._text) - len(body)
            return f"type {body}\n" + (f"keys {' '.join(['space'] * spaces)}\n" if spaces else "")
        return f"keys {' '.join(self._items)}\n" if self._items else ""

    def _close_line(self) -> None:
        self._done += self._render()
        self._kind, self._items, self._text = "", [], ""
        self._sync()

    def key(self, key: str, character: str | None, typing: bool) -> bool:
        """Record one key press; `typing` when it goes into a text field.  False when
        the key has no name a fixture can say (it is not recorded)."""
        if self._f is None:
            return False
        # A `type` character replays as the plain key of that character: only a key
        # that is exactly that (no alt+x) may go into a type line.
        as_text = (typing and character is not None and len(character) == 1 and character.isprintable()
                   and key == char_to_key(character)
                   and character != "#" and not (character == " " and self._kind != "type"))
        if as_text:
            # A new `type` line never starts with a space (the reader strips it).
            full = len(self._text) >= TYPE_PER_LINE and character != " "
            if self._kind != "type" or full:
                if self._kind:
                    self._close_line()
                self._kind = "type"
            self._text += character
        else:
            token = _token(key, character)
            if token is None:
                return False
            if self._kind == "type" or len(self._items) >= KEYS_PER_LINE:
                self._close_line()
            self._kind = "keys"
            self._items.append(token)
        self.keys += 1
        if not as_text and self._items[-1] in ENDS_LINE:
            self._close_line()
        else:
            self._sync()
        return True

    def close(self) -> None:
        """Write what is left and close; a failure stays in `error`, never raises."""
        if self._f is not None:
            self._close_line()
            try:
                self._f.close()
            except OSError as exc:
                self.error = exc
            self._f = None
