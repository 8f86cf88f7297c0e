"""Outputs that never overwrite inputs, and never appear half-written.

Every command that writes a file or directory a user named (`predict --out`, `export --out`,
`prepare --out`) first checks it against the paths it reads (`refuse_overlap`): the same path,
one that resolves to it through a symlink or a hard link, a path inside an input directory, or
an output directory that would contain an input, are all refused naming both. A check by name
alone is not enough: `predict --data scores.csv --out ./scores.csv` is one file, and so is a
symlink to it, and the output would replace the input with its own scores.

Each output is then written under a temporary name beside it (same directory: same file
system, so the final `os.replace` is atomic) and renamed into place only when complete, so a
crash, a full disk or a signal leaves the old output or none, never a part of one, and a
concurrent writer never shares the temporary name (each one gets its own).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path


class OutputError(ValueError):
    """An output path is refused (it is, or holds, an input); the message names both."""


def _same(a: Path, b: Path) -> bool:
    """One file or directory, by resolved name or (both existing) by inode: hard links too."""
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return parent in child.parents


def refuse_overlap(out: str | Path, inputs: Mapping[str, str | Path | None], what: str) -> Path:
    """The resolved `out`, if it is none of `inputs` (label -> path; None entries ignored), is
    not inside one of them and holds none of them; else OutputError naming the input.

    what: the flag or role of `out` for the message ("--out", "the export directory")."""
    out = Path(out).expanduser().resolve()
    for label, given in inputs.items():
        if given is None:
            continue
        src = Path(given).expanduser().resolve()
        if _same(out, src):
            why = "is"
        elif _inside(out, src):
            why = "is inside"
        elif _inside(src, out):
            why = "contains"
        else:
            continue
        raise OutputError(
            f"{what} {out} {why} {label} {src}: an output never overwrites an input; "
            f"choose another {what}"
        )
    return out


@contextlib.contextmanager
def replacing_file(out: Path) -> Iterator[Path]:
    """A fresh temporary path beside `out` for the `with` body to write; renamed to `out` when
    the body returns, removed when it raises."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is no mode for a result file
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def new_dir_beside(out: Path) -> Path:
    """An empty, uniquely named directory beside `out` (same file system), for a directory
    output written whole and then moved into place with `replace_dir`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:  # not mkdtemp: its 0700 would become the output's mode; mkdir keeps the umask's
        tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with contextlib.suppress(FileExistsError):
            tmp.mkdir()
            return tmp


def replace_dir(tmp: Path, out: Path) -> None:
    """Moves the complete directory `tmp` to `out`. An existing `out` is first renamed aside
    (one rename each way, so `out` is the old directory or the new one, absent only between
    the two renames) and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
