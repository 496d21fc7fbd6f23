"""Recording a session as a fixture that replays to the same state.

Every key is on disk when `key()` returns: the line being built is rewritten in
place and flushed, so the file is always a complete fixture and a kill loses
nothing already typed.  Characters typed into a prompt become `type` lines, the
rest `keys` lines; both deliver the same key events, the split is for reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from .fixture import MAX_SIZE, MIN_SIZE
from .keys import KeyNameError, char_to_key, check_key

KEYS_PER_LINE = 16
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
    def __init__(self, path: str | Path, *, scenario: str, size: tuple[int, int], note: str = "") -> None:
        self.path = Path(path)
        self.keys = 0
        self._f: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - held open for the session
        # A terminal outside the range a fixture accepts records at the nearest size
        # that replays (only paging keys depend on the height).
        size = (min(max(size[0], MIN_SIZE[0]), MAX_SIZE[0]), min(max(size[1], MIN_SIZE[1]), MAX_SIZE[1]))
        head = ["# recorded by vtdtui" + (f" {note}" if note else ""),
                "# replay: vtdtui replay THIS-FILE   (--headless for CI)",
                f"size {size[0]}x{size[1]}", f"scenario {scenario}", ""]
        self._start = self._write_at(0, "\n".join(head))
        self._kind = ""            # "keys" or "type": the open line
        self._items: list[str] = []
        self._text = ""

    def _write_at(self, offset: int, text: str) -> int:
        f = self._f
        assert f is not None
        data = text.encode("utf-8")
        f.seek(offset)
        f.write(data)
        f.truncate()
        f.flush()
        return offset + len(data)

    def _render(self) -> str:
        if self._kind == "type":
            body = self._text.rstrip(" ")
            spaces = len(self._text) - len(body)
            return f"type {body}\n" + (f"keys {' '.join(['space'] * spaces)}\n" if spaces else "")
        return f"keys {' '.join(self._items)}\n" if self._items else ""

    def _flush_line(self) -> None:
        self._write_at(self._start, self._render())

    def _close_line(self) -> None:
        self._start = self._write_at(self._start, self._render())
        self._kind, self._items, self._text = "", [], ""

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
            if self._kind != "type":
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
            self._flush_line()
        return True

    def close(self) -> None:
        if self._f is not None:
            self._close_line()
            self._f.close()
            self._f = None
