"""Output files written whole or not at all (issue 14).

`dump --json OUT` used to open OUT (truncating it) and then write: a full disk, a
kill or an error in between left OUT empty or cut.  `write_atomic` writes a temporary
file beside OUT, syncs it and renames it over OUT (`os.replace`, atomic on POSIX), so a
reader sees the old OUT or the new one, never a part.  The caller computes the whole
text first: nothing is opened before the work succeeded.
"""

from __future__ import annotations

import os
import stat
import tempfile


def _new_file_mode() -> int:
    # What open() would have given a new file: 0666 less the umask (mkstemp uses 0600).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` (str as UTF-8) to `path`, replacing it in one step.

    A symlink is followed (its target is replaced); a device or FIFO (/dev/null,
    /dev/stdout) cannot be renamed over and is written in place.  OSError propagates
    with the path, and no temporary file is left behind."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    target = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, os.strerror(21), os.fspath(path))
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(target, "wb") as f:
            f.write(raw)
        return
    folder, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else _new_file_mode())
        os.replace(tmp, target)
    except BaseException:  # a full disk, a kill signal turned exception, Ctrl+C: no debris
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
