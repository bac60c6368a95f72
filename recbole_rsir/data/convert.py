"""One-user-per-line benchmark files -> RecBole atomic ``.inter`` files.

The S3-Rec / CL4SRec / RSIR benchmarks come as ``user item item ...`` lines in time order,
optionally followed by a tab and the gaps (seconds) between consecutive items. RecBole
wants atomic files, so this module is the one place that reads the former and writes the
latter; every bundled dataset was made with it.
"""
import gzip
import os

import numpy as np

from recbole_rsir.errors import DatasetFormatError

SECONDS_PER_POSITION = 1
"""Added per position to the timestamps so that same-day items keep their file order
under RecBole's time ordering (gaps are whole days, so a day is never crossed)."""

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def _parse_ids(fields, path, lineno, what):
    try:
        values = [int(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not f.lstrip("-").isdigit())
        raise DatasetFormatError(f"{path}:{lineno}: {what} {bad!r} is not an integer id") from None
    if any(v < 0 for v in values):
        raise DatasetFormatError(f"{path}:{lineno}: {what} ids must be non-negative")
    return values


def read_sequences(path):
    """Read ``user item item ... [\\tgap gap ...]`` lines.

    Returns a list of ``(user, items, timestamps)``; timestamps are cumulative gaps plus
    the position (``SECONDS_PER_POSITION``), or the position alone when the file has no gaps.
    """
    if not os.path.isfile(path):
        raise DatasetFormatError(f"dataset file not found: {path}")
    opener = gzip.open if str(path).endswith(".gz") else open
    rows, seen = [], set()
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            seq_part, _, gap_part = line.partition("\t")
            fields = seq_part.split()
            user = _parse_ids(fields[:1], path, lineno, "user")[0]
            items = _parse_ids(fields[1:], path, lineno, "item")
            if not items:
                raise DatasetFormatError(f"{path}:{lineno}: user {user} has an empty sequence")
            if user in seen:
                raise DatasetFormatError(f"{path}:{lineno}: user {user} appears twice")
            seen.add(user)
            positions = np.arange(len(items), dtype=np.int64) * SECONDS_PER_POSITION
            if gap_part.strip():
                gaps = _parse_ids(gap_part.split(), path, lineno, "gap")
                if len(gaps) != len(items):
                    raise DatasetFormatError(
                        f"{path}:{lineno}: {len(items)} items but {len(gaps)} gaps"
                    )
                timestamps = np.cumsum(np.asarray(gaps, dtype=np.int64)) + positions
            else:
                timestamps = positions
            rows.append((user, items, timestamps.tolist()))
    if not rows:
        raise DatasetFormatError(f"{path}: no sequences in file")
    return rows


def write_atomic(rows, out_path):
    """Write ``rows`` from :func:`read_sequences` as an atomic ``.inter`` file (gzip if .gz)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    opener = gzip.open if str(out_path).endswith(".gz") else open
    tmp = f"{out_path}.tmp"
    with opener(tmp, "wt", encoding="utf-8") as f:
        f.write(INTER_HEADER)
        for user, items, timestamps in rows:
            f.writelines(f"{user}\t{i}\t{t}\n" for i, t in zip(items, timestamps))
    os.replace(tmp, out_path)
    return out_path


def check_atomic_file(path, required=("user_id", "item_id", "timestamp")):
    """Check an atomic ``.inter`` file line by line, so a bad row is reported by file and line
    instead of surfacing as a pandas error deep inside RecBole."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        missing = [r for r in required if r not in names]
        if missing:
            raise DatasetFormatError(f"{path}:1: header lacks {', '.join(missing)} (has {', '.join(header)})")
        floats = [i for i, h in enumerate(header) if h.endswith(":float")]
        tokens = [names.index(r) for r in required if not header[names.index(r)].endswith(":float")]
        rows = 0
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            if fields == [""]:
                continue
            if len(fields) != len(header):
                raise DatasetFormatError(f"{path}:{lineno}: {len(fields)} fields, header has {len(header)}")
            for i in tokens:
                if not fields[i].strip():
                    raise DatasetFormatError(f"{path}:{lineno}: empty {names[i]}")
            for i in floats:
                try:
                    float(fields[i])
                except ValueError:
                    raise DatasetFormatError(f"{path}:{lineno}: {names[i]} {fields[i]!r} is not a number") from None
            rows += 1
    if rows == 0:
        raise DatasetFormatError(f"{path}: no interactions")


def convert(path, name, out_dir):
    """Convert one benchmark file into ``out_dir/name/name.inter``; returns that path."""
    rows = read_sequences(path)
    return write_atomic(rows, os.path.join(out_dir, name, f"{name}.inter"))
