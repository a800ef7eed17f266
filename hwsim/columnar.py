"""A frame not built yet: a run's table as numpy columns, turned into a pandas DataFrame only when
someone reads it, or into a pyarrow table for its parquet file.

``hwsim run FILE --out DIR`` writes every file of a training run from these columns and never
imports pandas (about 0.4 s of a two-second process); a notebook that reads ``result.events``
gets the same DataFrame as before. The analysis functions take a :class:`Table` or a DataFrame
(:meth:`Table.of` wraps a frame, converting only the columns asked for). Like ``units`` and
``exceptions`` it imports nothing of hwsim: the engine makes Tables, the analysis reads them.

A column is one of three things:

- numbers: a numpy array (float64 or int64);
- :class:`Coded` text: integer codes into a list of values (-1: missing), a categorical column
  (or, with ``plain``, a text column stored coded: many rows, few distinct values);
- plain text: a list (or object array) of strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["Table", "Coded"]


class Coded(NamedTuple):
    """A categorical column: *codes* (integers, -1 for a missing value) into *values* (its
    categories, strings, sorted for a frame's categorical dtype). With *plain*, a text column
    (a DataFrame's strings, an arrow string column) stored as codes."""

    codes: np.ndarray
    values: Sequence[str]
    plain: bool = False


class Table:
    """Named columns of equal length (see the module doc), or a DataFrame read column by column.

    Parameters
    ----------
    columns : mapping
        Column name -> numpy array, :class:`Coded` or list of strings, in frame order.
    """

    __slots__ = ("_cols", "_frame", "_n")

    def __init__(self, columns: Mapping[str, Any] | None = None) -> None:
        self._cols: dict[str, Any] = dict(columns or {})
        self._frame: Any = None
        first = next(iter(self._cols.values()), None)
        self._n = 0 if first is None else len(first.codes if isinstance(first, Coded) else first)

    @classmethod
    def of(cls, data: Table | pd.DataFrame) -> Table:
        """*data* as a Table: itself, or a view of a DataFrame whose columns are converted when
        first read."""
        if isinstance(data, Table):
            return data
        out = cls({})
        out._frame, out._n = data, len(data)
        return out

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def frame(self) -> pd.DataFrame | None:
        """The DataFrame this Table reads (:meth:`of`), None for one of columns."""
        return self._frame

    @property
    def columns(self) -> list[str]:
        if self._frame is not None:
            return [str(c) for c in self._frame.columns]
        return list(self._cols)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> Any:
        """The column as stored: a numpy array, a :class:`Coded` or a list of strings (a
        DataFrame's: its numpy values)."""
        if self._frame is not None:
            return self._frame[name].to_numpy()
        return self._cols[name]

    def numbers(self, name: str, dtype: Any = float) -> np.ndarray:
        """Column *name* as a numpy array of *dtype*."""
        if self._frame is not None:
            return self._frame[name].to_numpy(dtype=dtype)
        return np.asarray(self._cols[name], dtype=dtype)

    def floats(self, name: str) -> np.ndarray:
        """Column *name* as floats, a value that is not a number as NaN (a DataFrame's column
        through ``pd.to_numeric(errors="coerce")``)."""
        if self._frame is None:
            return self.numbers(name)
        import pandas as pd

        return pd.to_numeric(self._frame[name], errors="coerce").to_numpy(float)

    def strings(self, name: str) -> list[str]:
        """Column *name* as strings, one per row (a missing value as ``""``)."""
        codes, names = self.text(name)
        return [names[k] for k in codes.tolist()]

    def text(self, name: str) -> tuple[np.ndarray, list[str]]:
        """Column *name* as codes into its distinct values as strings, sorted (a missing value
        is ``""``): the ``pd.factorize(..., sort=True)`` of the column as text, without a string
        per row for a categorical one."""
        if self._frame is not None:
            return _frame_text(self._frame[name])
        col = self._cols[name]
        if isinstance(col, Coded):
            labels = [str(v) for v in col.values] + [""]
            codes = np.asarray(col.codes, np.int64).copy()
            codes[codes < 0] = len(labels) - 1
        else:  # codes in order of first appearance (a dict: no sort of the strings)
            index: dict[str, int] = {}
            codes = np.fromiter((index.setdefault("" if v is None else str(v), len(index))
                                 for v in col), np.int64, len(col))
            labels = list(index)
        present = np.unique(codes).tolist()
        names = sorted({labels[k] for k in present})
        index = {v: i for i, v in enumerate(names)}
        lut = np.array([index.get(v, -1) for v in labels], dtype=np.int64)
        return lut[codes] if len(codes) else codes.astype(np.int64), names

    def take(self, index: np.ndarray | slice) -> Table:
        """The rows *index* (a boolean mask, positions or a slice), in that order."""
        if self._frame is not None:
            return Table.of(self._frame[index] if isinstance(index, np.ndarray)
                            and index.dtype == bool else self._frame.iloc[index])
        return Table({c: _take(v, index) for c, v in self._cols.items()})

    # -- converting -----------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """The DataFrame: numbers as they are, coded text categorical (its values as the
        categories), plain text as strings."""
        if self._frame is not None:
            return self._frame
        import pandas as pd

        data = {}
        for c, v in self._cols.items():
            if isinstance(v, Coded) and v.plain:
                v = np.append(np.asarray(v.values, dtype=object), None)[v.codes]
            elif isinstance(v, Coded):
                dtype = pd.CategoricalDtype(pd.Index([str(x) for x in v.values], dtype=str))
                v = pd.Categorical.from_codes(np.asarray(v.codes), dtype=dtype, validate=False)
            data[c] = v
        return pd.DataFrame(data, columns=list(self._cols))

    def to_arrow(self) -> pa.Table:
        """The pyarrow table ``pa.Table.from_pandas(self.to_pandas(), preserve_index=False)``
        would give (the same column types; without the pandas metadata), built from the columns
        without pandas. A text column is ``large_string`` even when empty or all missing (where
        pandas would infer no type, ``null``)."""
        import pyarrow as pa

        if self._frame is not None:
            return pa.Table.from_pandas(self.to_pandas(), preserve_index=False)
        return pa.Table.from_arrays([_arrow(v) for v in self._cols.values()],
                                    names=list(self._cols))


def _take(column: Any, index: np.ndarray | slice) -> Any:
    if isinstance(column, Coded):
        return Coded(column.codes[index], column.values, column.plain)
    if isinstance(column, np.ndarray):
        return column[index]
    return np.asarray(column, dtype=object)[index].tolist()


def _arrow(column: Any) -> pa.Array:
    """The pyarrow array of a column, made from its buffers: ``pa.array`` would import pandas
    (to ask whether the data is a pandas object)."""
    import pyarrow as pa

    if isinstance(column, Coded) and column.plain:
        return _gathered([str(x) for x in column.values], np.asarray(column.codes))
    if isinstance(column, Coded):
        codes = np.asarray(column.codes)
        index = codes.astype(_code_dtype(len(column.values)))
        return pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(pa.from_numpy_dtype(index.dtype), len(index),
                                  [_validity(codes >= 0), pa.py_buffer(index)]),
            _strings([str(x) for x in column.values]))
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiu":
        values = np.ascontiguousarray(column)
        return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                     [None, pa.py_buffer(values)])
    if isinstance(column, np.ndarray) and column.dtype.kind == "b":
        return pa.Array.from_buffers(pa.bool_(), len(column), [None, _validity(column)])
    return _strings(["" if x is None else str(x) for x in column],
                    [x is not None for x in column])


def _validity(keep: np.ndarray) -> Any:
    """An arrow bitmap of the booleans *keep* (None when all are true)."""
    import pyarrow as pa

    if keep.all():
        return None
    return pa.py_buffer(np.packbits(keep, bitorder="little"))


def _strings(values: list[str], valid: list[bool] | None = None) -> pa.Array:
    """A large_string array of *values* (those not *valid* null)."""
    import pyarrow as pa

    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    mask = None if valid is None else _validity(np.asarray(valid, bool))
    return pa.Array.from_buffers(pa.large_string(), len(encoded),
                                 [mask, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _gathered(values: list[str], codes: np.ndarray) -> pa.Array:
    """The large_string array of ``values[code]`` for each of *codes* (-1: null), its bytes
    gathered with numpy (``DictionaryArray.dictionary_decode`` would import pyarrow.compute)."""
    import pyarrow as pa

    encoded = [v.encode() for v in values] + [b""]
    size = np.fromiter(map(len, encoded), np.int64, len(encoded))
    start = np.zeros(len(encoded), np.int64)
    np.cumsum(size[:-1], out=start[1:])
    rows = size[codes]
    offsets = np.zeros(len(codes) + 1, np.int64)
    np.cumsum(rows, out=offsets[1:])
    pool = np.frombuffer(b"".join(encoded), np.uint8)
    data = pool[np.repeat(start[codes] - offsets[:-1], rows) + np.arange(offsets[-1])]
    return pa.Array.from_buffers(pa.large_string(), len(codes),
                                 [_validity(codes >= 0), pa.py_buffer(offsets),
                                  pa.py_buffer(data)])


def _code_dtype(categories: int) -> Any:
    """The integer type pandas gives the codes of a categorical of this many categories."""
    for dtype in (np.int8, np.int16, np.int32):
        if categories < np.iinfo(dtype).max:
            return dtype
    return np.int64


def _frame_text(values: Any) -> tuple[np.ndarray, list[str]]:
    """:meth:`Table.text` of a pandas Series."""
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = np.asarray(values.cat.codes.to_numpy(), np.int64)
        return Table({"c": Coded(codes, [str(c) for c in values.cat.categories])}).text("c")
    codes, uniques = pd.factorize(values.astype(object).fillna("").astype(str), sort=True)
    return np.asarray(codes, np.int64), [str(u) for u in uniques]
