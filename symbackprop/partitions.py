"""Partitioned data files: a glob or a directory of Parquet or CSV files, read one partition at a time.

A source such as ``parts/*.parquet`` (a glob; ``**`` recurses) or ``parts`` (a directory: the data files
directly in it) names files of one format, Parquet (``.parquet``, ``.pq``) or CSV (``.csv``). Names
starting with ``_`` or ``.`` are skipped (``_SUCCESS``, ``_metadata``: what Spark and Dask write beside
the data). Columns are named as in a CSV file of :mod:`symbackprop.data` (``x``, ``x[0]``, ``"M[0,1]"``).

A **partition** is the unit one worker reads, checks and computes on: one row group of a Parquet file
(``df.to_parquet`` writes one per file, larger files hold several), or one whole CSV file. The client
only lists the files and reads their headers (Parquet footers, CSV first lines), so a missing column or
a mix of formats is refused before any worker starts; the workers read the partitions. Every error is
one line naming the file, the column, and the row: ``parts/p3.parquet: row index 7, column 'x[1]': nan
is not a finite number``.

:func:`write_partitions` writes arrays as such files. pyarrow reads and writes both formats (imported
here only, so symbackprop works without it). A CSV file is read
with pyarrow first; if that fails or meets a cell that is not a finite number, the file is read again
with :func:`symbackprop.data.read_csv`, the reference reader, whose error gives the line number (or
whose numbers are used, where it accepts what pyarrow did not).
"""
from __future__ import annotations

import csv
import glob
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .data import (DataError, InputColumns, arrays_from_columns, check_header, read_csv, table_layout,
                   warn_ignored_columns)

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Partition:
    """Where one partition lives: a file (as the workers open it, and as the user wrote it) and its part."""

    path: str  # absolute, so a worker with another working directory opens the same file
    shown: str  # the file as the user's source named it, for messages
    format: str  # "parquet" or "csv"
    row_group: int | None = None  # Parquet: which row group
    first_row: int = 0  # Parquet: the file's row index of the first row of this row group
    rows: int | None = None  # known from the Parquet footer; a CSV file's rows are counted when read

    def __str__(self) -> str:
        return self.shown if self.row_group is None else f"{self.shown} (row group {self.row_group})"


def _natural_key(path: Path) -> list:
    """part.2 before part.10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_files(source: str | Path) -> list[Path]:
    """The data files a source names, in natural order; one format only, else a one-line DataError."""
    text = str(source)
    if glob.has_magic(text):
        matches = [Path(p) for p in glob.glob(text, recursive=True)]
        if not matches:
            raise DataError(f"{text}: no files match")
        for p in matches:
            if p.is_dir() and "**" not in text:
                raise DataError(f"{p}: is a directory (give files, or a pattern such as '{p}/*.parquet')")
        files = [p for p in matches if p.is_file() and not p.name.startswith(("_", "."))]
    elif Path(text).is_dir():
        entries = sorted(Path(text).iterdir())
        sub = next((p for p in entries if p.is_dir() and not p.name.startswith(("_", "."))), None)
        if sub is not None:
            raise DataError(f"{sub}: subdirectories are not read (give a pattern such as '{text}/**/*.parquet')")
        files = [p for p in entries if p.is_file() and not p.name.startswith(("_", "."))]
        if not files:
            raise DataError(f"{text}: no data files in this directory (expected .parquet or .csv files)")
    elif Path(text).is_file():
        files = [Path(text)]
    else:
        raise DataError(f"{text}: no such file or directory")
    if not files:
        raise DataError(f"{text}: no data files match (names starting with '_' or '.' are skipped)")
    for p in files:
        if p.suffix.lower() not in FORMATS:
            raise DataError(f"{p}: unknown data format '{p.suffix}' (use .parquet or .csv)")
    kinds = {FORMATS[p.suffix.lower()]: p for p in files}
    if len(kinds) > 1:
        raise DataError(f"{text}: mixes Parquet and CSV files ({kinds['parquet']} and {kinds['csv']}); "
                        "use one format")
    return sorted(files, key=_natural_key)


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise DataError("reading Parquet or CSV partitions needs pyarrow: pip install 'symbackprop[dask]'") from None
    return pyarrow


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:100]


def _csv_header(path: Path) -> list[str]:
    """The first non-blank row of a CSV file, as the reference reader sees it (raw, not stripped)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if any(c.strip() for c in row):
                    return row
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    raise DataError(f"{path}: empty file (expected a header row naming the inputs)")


def _parquet_partitions(path: Path, layout: Sequence[InputColumns]) -> tuple[list[Partition], list[str]]:
    pa = _pyarrow()
    try:
        meta = pa.parquet.ParquetFile(path)
        schema = meta.schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({_short(e)})") from None
    ignored = check_header(schema.names, layout, str(path))
    for q in layout:
        for c in q.columns:
            kind = schema.field(c).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
                raise DataError(f"{path}: column '{c}' is not numeric (type {kind})")
    parts, first = [], 0
    for g in range(meta.metadata.num_row_groups):
        rows = meta.metadata.row_group(g).num_rows
        if rows:
            parts.append(Partition(str(path.resolve()), str(path), "parquet", g, first, rows))
        first += rows
    return parts, ignored


def list_partitions(source: str | Path, layout: Sequence[InputColumns]) -> list[Partition]:
    """The partitions of a source, after checking every file's header (columns, and Parquet's types).

    Columns no input uses are named in one :class:`~symbackprop.data.DataWarning` for the source.
    """
    files = find_files(source)
    parts: list[Partition] = []
    ignored: dict[str, None] = {}
    for path in files:
        if FORMATS[path.suffix.lower()] == "parquet":
            found, unused = _parquet_partitions(path, layout)
        else:
            header = [h.strip() for h in _csv_header(path)]
            unused = check_header(header, layout, str(path))
            found = [Partition(str(path.resolve()), str(path), "csv")]
        parts += found
        ignored.update(dict.fromkeys(unused))
    if not parts:
        raise DataError(f"{source}: no data rows (every file is empty)")
    warn_ignored_columns(str(source), list(ignored))
    return parts


def read_partition(part: Partition, layout: Sequence[InputColumns]) -> dict[str, np.ndarray]:
    """One partition's arrays, input name -> float64 ``(n, *shape)``, checked as any data file is."""
    pa = _pyarrow()
    used = [c for q in layout for c in q.columns]
    if part.format == "parquet":
        try:
            table = pa.parquet.ParquetFile(part.path).read_row_group(part.row_group, columns=used)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{part}: not readable ({_short(e)})") from None
        if table.num_rows != part.rows:
            raise DataError(f"{part}: has {table.num_rows} rows, its footer says {part.rows} (file changed?)")
        columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in used}
        for c in used:  # a null cell reads as NaN (numbers) or None (booleans): name it as such
            if table.column(c).null_count:
                row = int(np.argmax(table.column(c).is_null().to_numpy(zero_copy_only=False)))
                raise DataError(f"{part.shown}: row index {part.first_row + row}, column '{c}': empty (null) cell")
        return arrays_from_columns(columns, layout, part.shown,
                                   row_name=lambda i: f"row index {part.first_row + i}")
    raw = {h.strip(): h for h in _csv_header(Path(part.path))}
    try:
        table = pa.csv.read_csv(part.path, convert_options=pa.csv.ConvertOptions(
            include_columns=[raw[c] for c in used], column_types={raw[c]: pa.float64() for c in used}))
        if table.num_rows:
            columns = {c: table.column(raw[c]).to_numpy(zero_copy_only=False) for c in used}
            return arrays_from_columns(columns, layout, part.shown)
    except (pa.ArrowException, OSError, DataError):
        pass  # the reference reader below says what is wrong, with the line number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ignored columns were reported once, by list_partitions
        return read_csv(Path(part.path), layout)


def write_partitions(arrays: Mapping[str, np.ndarray], directory: str | Path, parts: int | Sequence[int],
                     format: str = "parquet", row_group_rows: int | None = None) -> list[Path]:
    """Write input arrays ``(N, *shape)`` as partition files ``part-00000.parquet``, ... in ``directory``.

    ``parts``: the number of files (nearly equal sizes), or the number of rows in each. Columns are named
    as a CSV file names them; Parquet files get row groups of at most ``row_group_rows`` rows. Float64
    values are written exactly (CSV cells as Python's shortest repr, which reads back to the same bits).
    """
    if format not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {format!r}")
    n = len(next(iter(arrays.values())))
    sizes = list(parts) if not isinstance(parts, int) else np.diff(np.linspace(0, n, parts + 1).round()).astype(int)
    if sum(sizes) != n or min(sizes) < 1:
        raise ValueError(f"partition sizes {list(sizes)} do not cut {n} rows into non-empty parts")
    layout = table_layout({k: np.shape(v)[1:] for k, v in arrays.items()})
    columns = {c: col for q in layout for c, col in
               zip(q.columns, np.asarray(arrays[q.name], dtype=np.float64).reshape(n, -1).T)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for i, size in enumerate(sizes):
        path = directory / f"part-{i:05d}.{format}"
        chunk = {c: v[start:start + size] for c, v in columns.items()}
        if format == "parquet":
            pa = _pyarrow()
            pa.parquet.write_table(pa.table(chunk), path, row_group_size=row_group_rows)
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(chunk)
                writer.writerows(zip(*(v.tolist() for v in chunk.values())))
        paths.append(path)
        start += size
    return paths
