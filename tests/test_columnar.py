"""hwsim.columnar.Table: a run's frames as numpy columns. Its DataFrame is the one pandas would
build, its arrow table the one ``pa.Table.from_pandas`` would give (so the parquet files keep
their schemas), and its text codes those of ``pd.factorize`` -- without importing pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.columnar import Coded, Table

TEXT = st.lists(st.one_of(st.none(), st.sampled_from(["gpu0", "n1->n2", "", "é/ü", "b", "a"])),
                max_size=40)


def _table(values: list) -> Table:
    n = len(values)
    names = sorted({v for v in values if v is not None})
    codes = np.array([names.index(v) if v is not None else -1 for v in values], np.int64)
    return Table({"t": np.arange(n, dtype=float), "rank": np.arange(n, dtype=np.int64),
                  "cat": Coded(codes, names), "plain": Coded(codes, names, plain=True),
                  "text": [v if v is not None else None for v in values]})


@settings(max_examples=60, deadline=None)
@given(TEXT)
def test_arrow_and_pandas_forms_agree_with_pandas_own(values: list) -> None:
    table = _table(values)
    frame = table.to_pandas()
    assert list(frame.columns) == ["t", "rank", "cat", "plain", "text"]
    assert isinstance(frame["cat"].dtype, pd.CategoricalDtype)
    assert frame["plain"].tolist() == frame["text"].tolist()
    if not any(v is not None for v in values):  # pandas infers no type (null); ours: text
        if values:
            assert table.to_arrow().schema.field("text").type == pa.large_string()
        return
    ours = table.to_arrow()
    theirs = pa.Table.from_pandas(frame, preserve_index=False)
    assert ours.schema.equals(theirs.schema.remove_metadata())
    assert ours.to_pylist() == theirs.to_pylist()
    back = ours.to_pandas()
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


@settings(max_examples=60, deadline=None)
@given(TEXT)
def test_text_codes_are_a_sorted_factorize(values: list) -> None:
    """Codes into the sorted distinct strings (missing as ""), the same from every form."""
    expect_codes, expect_names = pd.factorize(
        pd.Series(values, dtype=object).fillna("").astype(str), sort=True)
    table = _table(values)
    for column in ("cat", "plain", "text"):
        codes, names = table.text(column)
        assert names == list(expect_names) and codes.tolist() == expect_codes.tolist()
        assert table.strings(column) == ["" if v is None else v for v in values]
    codes, names = Table.of(table.to_pandas()).text("cat")
    assert names == list(expect_names) and codes.tolist() == expect_codes.tolist()


def test_take_keeps_rows_in_the_order_asked() -> None:
    table = _table(["b", None, "a", "b"])
    mask = np.array([True, False, True, True])
    picked = table.take(mask)
    assert len(picked) == 3 and picked.strings("cat") == ["b", "a", "b"]
    assert picked.numbers("t").tolist() == [0.0, 2.0, 3.0]
    assert table.take(np.array([3, 0])).strings("text") == ["b", "b"]
    frame = table.to_pandas()
    assert Table.of(frame).take(mask).strings("cat") == ["b", "a", "b"]


def test_an_empty_table_builds_an_empty_frame_and_arrow_table() -> None:
    table = Table({"category": [], "seconds": np.empty(0)})
    assert len(table) == 0 and table.columns == ["category", "seconds"]
    assert table.to_pandas().shape == (0, 2)
    assert table.to_arrow().num_rows == 0
    assert len(Table()) == 0 and Table().to_pandas().empty


def test_arrow_form_does_not_import_pandas() -> None:
    """pyarrow's ``pa.array`` imports pandas (to ask whether it was given a pandas object); the
    Table builds its arrays from buffers."""
    code = ("import sys, numpy as np\n"
            "from hwsim.columnar import Coded, Table\n"
            "t = Table({'x': np.arange(3.0), 'c': Coded(np.array([0, -1, 1]), ['a', 'b']),"
            " 'p': Coded(np.array([1, 1, 0]), ['a', 'b'], plain=True), 's': ['u', None, 'v']})\n"
            "a = t.to_arrow()\n"
            "assert a.column('p').to_pylist() == ['b', 'b', 'a'], a\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "False"


def test_values_that_are_not_text_are_written_as_text() -> None:
    table = Table({"s": np.array([1, "a"], dtype=object)})
    assert table.to_arrow().column("s").to_pylist() == ["1", "a"]
