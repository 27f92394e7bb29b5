"""Numeric time series from CSV: checked reading, the benchmark splits, scaling, windows.

A series file is a CSV with a header, an optional time column (ISO dates or date-times,
strictly increasing) and numeric columns. Splits are by row:

- ``ett_hourly``, the protocol of Informer, Autoformer, DLinear and PatchTST on ETTh1/ETTh2:
  train rows [0, 8640), validation [8640 - L, 11520), test [11520 - L, 14400) for look-back L;
- ``ratio``: the first 70% of the rows train, the last 20% test, the 10% between validate,
  validation and test starting L rows early so their first window has a full look-back.

Every window (stride 1) whose targets lie inside a split belongs to it: a split of R rows
holds R - L - H + 1 windows. A per-column standard scaler is fitted on the train rows only.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from nlp_lstm.errors import ConfigError, DataError, quote
from nlp_lstm.files import read_text

SplitKind = Literal["auto", "ett_hourly", "ratio"]
ETT_HOURLY_BORDERS = (8640, 11520, 14400)  # 12, 4 and 4 months of hours


@dataclass
class Series:
    """A table of numbers read from a CSV file: ``values`` ``(rows, columns)`` in file
    order, the column names, and the time stamps (None without a time column)."""

    path: str
    columns: list[str]
    values: np.ndarray
    times: list[datetime] | None

    def __len__(self) -> int:
        return self.values.shape[0]

    def index(self, names: list[str]) -> list[int]:
        return [self.columns.index(n) for n in names]


def read_series(path: str | Path, time_column: str | None = "date") -> Series:
    """Read and check a series CSV: every cell of a value column must be a finite number,
    the time column (if named) must parse and strictly increase. Errors name the line."""
    text = read_text(path, "series file")
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader)]
    if time_column is not None and time_column not in header:
        raise DataError(
            path, 1, f"no time column {time_column!r} in the header (set data.time_column)"
        )
    time_at = header.index(time_column) if time_column is not None else None
    columns = [h for i, h in enumerate(header) if i != time_at]
    if not columns:
        raise DataError(path, 1, "no value columns beside the time column")
    rows: list[list[float]] = []
    times: list[datetime] = []
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(
                path, start, f"expected {len(header)} cells like the header, found {len(row)}"
            )
        values = []
        for i, cell in enumerate(row):
            cell = cell.strip()
            if i == time_at:
                try:
                    stamp = datetime.fromisoformat(cell)
                except ValueError:
                    raise DataError(
                        path, start, f"time {quote(cell)} is not an ISO date or date-time"
                    ) from None
                if times and stamp <= times[-1]:
                    raise DataError(
                        path, start, f"time {cell} does not come after {times[-1].isoformat(' ')}"
                    )
                times.append(stamp)
                continue
            if not cell:
                raise DataError(path, start, f"empty cell in column {header[i]!r}")
            try:
                number = float(cell)
            except ValueError:
                raise DataError(
                    path, start, f"column {header[i]!r}: {quote(cell)} is not a number"
                ) from None
            if not math.isfinite(number):
                raise DataError(path, start, f"column {header[i]!r}: {cell} is not finite")
            values.append(number)
        rows.append(values)
    if not rows:
        raise DataError(path, None, "series file has no data rows")
    return Series(
        str(path),
        columns,
        np.asarray(rows, dtype=np.float64),
        times if time_at is not None else None,
    )


def series_from_table(table, time_column: str | None = "date", name: str = "table") -> Series:
    """A :class:`Series` from a pandas DataFrame or a dict of equal-length columns, checked
    as :func:`read_series` checks a file (numbers finite, times increasing). A DataFrame
    without the time column may carry the times in a DatetimeIndex."""
    times = None
    if hasattr(table, "columns") and hasattr(table, "index"):  # a pandas DataFrame
        columns = {str(c): list(table[c]) for c in table.columns}
        if time_column is not None and time_column not in columns:
            index = list(table.index)
            if index and all(isinstance(t, datetime) for t in index):
                columns[time_column] = index
    elif isinstance(table, dict):
        columns = {str(k): list(v) for k, v in table.items()}
    else:
        raise TypeError(
            f"expected a CSV path, a DataFrame or a dict of columns, not {type(table).__name__}"
        )
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"{name}: columns of different lengths ({sorted(sizes)})")
    if time_column is not None:
        if time_column not in columns:
            raise ValueError(f"{name}: no time column {time_column!r}")
        times = []
        for value in columns.pop(time_column):
            stamp = value if isinstance(value, datetime) else None
            if stamp is None:
                try:
                    stamp = datetime.fromisoformat(str(value))
                except ValueError:
                    raise ValueError(f"{name}: time {quote(str(value))} is not an ISO date or date-time") from None  # fmt: skip
            if times and stamp <= times[-1]:
                raise ValueError(f"{name}: time {stamp} does not come after {times[-1]}")
            times.append(stamp.to_pydatetime() if hasattr(stamp, "to_pydatetime") else stamp)
    if not columns or not sizes or not next(iter(sizes)):
        raise ValueError(f"{name}: no value columns or no rows")
    try:
        values = np.asarray(list(columns.values()), dtype=np.float64).T
    except (TypeError, ValueError):
        raise ValueError(f"{name}: every value column must hold numbers") from None
    if not np.isfinite(values).all():
        column = list(columns)[int(np.argwhere(~np.isfinite(values))[0][1])]
        raise ValueError(f"{name}: column {column!r} holds a value that is not finite")
    return Series(name, list(columns), values, times)


def split_kind(kind: SplitKind, path: str | Path) -> Literal["ett_hourly", "ratio"]:
    """``auto``: the ETT-hourly protocol for ETTh* files, the 70/10/20 ratio otherwise."""
    if kind != "auto":
        return kind
    return "ett_hourly" if Path(path).name.lower().startswith("etth") else "ratio"


def split_rows(
    kind: Literal["ett_hourly", "ratio"], rows: int, look_back: int
) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of the train, dev (validation) and test splits."""
    if kind == "ett_hourly":
        train_end, dev_end, test_end = ETT_HOURLY_BORDERS
        if rows < test_end:
            raise ConfigError(
                f"data.split=ett_hourly needs {test_end} rows, the file has {rows} "
                "(use data.split=ratio for other series)"
            )
    else:
        train_end = int(rows * 0.7)
        test_end = rows
        dev_end = rows - int(rows * 0.2)
    return {
        "train": (0, train_end),
        "dev": (max(train_end - look_back, 0), dev_end),
        "test": (max(dev_end - look_back, 0), test_end),
    }


def window_count(rows: tuple[int, int], look_back: int, horizon: int) -> int:
    """Windows (stride 1) of look-back L and horizon H inside a row range: R - L - H + 1."""
    return max(rows[1] - rows[0] - look_back - horizon + 1, 0)


@dataclass
class Scaler:
    """Per-column standardisation ``(x - mean) / std`` with train-row statistics."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
        mean = self.mean if columns is None else self.mean[columns]
        std = self.std if columns is None else self.std[columns]
        return values * std + mean

    def to_plain(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_plain(cls, plain: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(plain["mean"]), np.asarray(plain["std"]))


@dataclass
class WindowBatch:
    """Look-back windows and the horizons that follow them."""

    inputs: Tensor  # (B, L, inputs): target columns first, then input-only features
    targets: Tensor  # (B, H, targets)
    indices: Tensor  # (B,) window positions in the split


class Windows:
    """The stride-1 windows of one split over a scaled table. Window ``i`` reads rows
    ``[start + i, start + i + L)`` and predicts rows ``[start + i + L, start + i + L + H)``
    of the target columns; called with window positions it returns a :class:`WindowBatch`."""

    def __init__(
        self,
        scaled: np.ndarray,
        rows: tuple[int, int],
        look_back: int,
        horizon: int,
        inputs: list[int],
        targets: list[int],
    ) -> None:
        self.start = rows[0]
        self.look_back = look_back
        self.horizon = horizon
        self.count = window_count(rows, look_back, horizon)
        table = torch.as_tensor(scaled[rows[0] : rows[1]], dtype=torch.float32)
        self.inputs = table[:, inputs].contiguous()
        self.targets = table[:, targets].contiguous()

    def __len__(self) -> int:
        return self.count

    def window(self, i: int) -> tuple[Tensor, Tensor]:
        """Inputs ``(L, inputs)`` and targets ``(H, targets)`` of window ``i``."""
        cut = i + self.look_back
        return self.inputs[i:cut], self.targets[cut : cut + self.horizon]

    def __call__(self, positions: list[int]) -> WindowBatch:
        pairs = [self.window(i) for i in positions]
        return WindowBatch(
            torch.stack([x for x, _ in pairs]),
            torch.stack([y for _, y in pairs]),
            torch.tensor(positions),
        )
