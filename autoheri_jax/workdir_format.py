"""The format version of the JSON files a workdir holds, and the check that refuses any other.

Every JSON object a workdir writes through `Workdir.write_json` (config.json, architecture.json,
results.json, models/<name>/train.json, a study's study.json and study_run.json, evolution.json)
starts with `"format_version": FORMAT_VERSION`. A later step reads it back through
`read_json_file` (or `Workdir.read_json`), which returns the object without the key and raises
`WorkdirFormatError` naming the file and both versions when they differ. Files of another
version are refused, not migrated: the code that wrote them reads them, or the command that
made them runs again. The JSON-lines logs (metrics.jsonl, edge_history.jsonl, evolution.jsonl)
are appended record by record and carry no version; they are read only for figures and plots.

Jax-free, so config.py can read a saved config.json through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1  # bump when a workdir file changes its layout or meaning
KEY = "format_version"


class WorkdirFormatError(ValueError):
    """A workdir file of another format version; the message names the file and both versions."""


def stamp(obj: Any) -> Any:
    """`obj` as written to a workdir: a dict gets the format version as its first key; a value
    of another type (no workdir file is one) is returned unchanged."""
    if isinstance(obj, dict):
        return {KEY: FORMAT_VERSION, **{k: v for k, v in obj.items() if k != KEY}}
    return obj


def unstamp(obj: Any, source: str | Path) -> Any:
    """`obj` read from the workdir file `source`, without its format version, which must be
    FORMAT_VERSION: WorkdirFormatError otherwise (a dict without one predates the versions)."""
    if not isinstance(obj, dict):
        return obj
    found = obj.get(KEY)
    if found != FORMAT_VERSION:
        written = (
            "has no format_version (written before workdir files were versioned)"
            if found is None
            else f"is workdir format {found!r}"
        )
        raise WorkdirFormatError(
            f"{source} {written}; this code reads format {FORMAT_VERSION} only: run the command "
            "that made it again (with --fresh for a workdir) or read it with the code that wrote it"
        )
    return {k: v for k, v in obj.items() if k != KEY}


def read_json_file(path: str | Path) -> Any:
    """The object of the workdir JSON file at `path`, checked and without its version.
    WorkdirFormatError names the file when it is not JSON or of another format version;
    FileNotFoundError when it is missing."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WorkdirFormatError(f"{path} is not JSON ({e})") from None
    return unstamp(obj, path)
