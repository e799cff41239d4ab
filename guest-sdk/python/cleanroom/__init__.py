"""Write cleanroom analyses in Python.

An analysis is a function decorated with :func:`analysis`; it receives the
run's params (parsed JSON, ``{}`` when empty), reads granted tables and
publishes outputs::

    import cleanroom

    @cleanroom.analysis
    def run(params):
        table = cleanroom.open("patients")
        ages = table.column("age")            # a list, None for nulls
        cleanroom.publish_json("mean_age", sum(ages) / len(ages))

Build it into a component with ``scripts/build-python.sh analysis.py out.wasm``
(``cleanroom new python NAME`` starts a project; see docs/guide/python.md). numpy and pyarrow do not exist for WASI:
columns arrive as typed ``memoryview`` objects over raw Arrow buffers, and
tables are published as plain Python lists.
"""

import json
import traceback
from array import array
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from componentize_py_types import Err

import wit_world
from wit_world.imports import aggregate as _aggregate
from wit_world.imports import output as _output
from wit_world.imports import tables as _tables

from .groups import GroupStats, group_stats

__all__ = [
    "AnalysisError",
    "aggregate",
    "Batch",
    "Column",
    "GroupStats",
    "Table",
    "analysis",
    "debug",
    "group_stats",
    "info",
    "open",
    "publish_file",
    "publish_json",
    "publish_table",
    "table_names",
    "warn",
]


class AnalysisError(Exception):
    """Raise to end the run as failed with this message."""


_RUN: Optional[Callable[[Any], None]] = None


def analysis(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``fn(params)`` as the component's analysis."""
    global _RUN
    _RUN = fn
    return fn


class WitWorld(wit_world.WitWorld):
    """The component's export; calls the function registered with :func:`analysis`."""

    def run(self, params: str) -> None:
        if _RUN is None:
            raise Err("no function was registered with @cleanroom.analysis")
        try:
            parsed = json.loads(params) if params.strip() else {}
        except ValueError as e:
            raise Err(f"invalid params: {e}")
        try:
            _RUN(parsed)
        except AnalysisError as e:
            raise Err(str(e))
        except Err:
            raise
        except Exception as e:  # any bug in the analysis fails the run with its traceback in the log
            traceback.print_exc()
            raise Err(f"{type(e).__name__}: {e}")


def _table_error(e: Err) -> AnalysisError:
    v = e.value
    if isinstance(v, _tables.TableError_NotFound):
        return AnalysisError(f"table {v.value!r} was not granted to this run")
    if isinstance(v, _tables.TableError_TooManyOpen):
        return AnalysisError(f"a run may open at most {v.value} tables")
    if isinstance(v, _tables.TableError_InvalidColumn):
        return AnalysisError(f"invalid column: {v.value}")
    return AnalysisError(f"reading the table failed: {v.value}")


def _output_error(e: Err) -> AnalysisError:
    v = e.value
    kind = type(v).__name__.split("_", 1)[-1]
    return AnalysisError(f"output refused ({kind}): {v.value}")


# Typecodes of fixed-width types, for memoryview.cast.
_CODES = {
    _tables.DataType_Int8: "b",
    _tables.DataType_Int16: "h",
    _tables.DataType_Int32: "i",
    _tables.DataType_Int64: "q",
    _tables.DataType_Uint8: "B",
    _tables.DataType_Uint16: "H",
    _tables.DataType_Uint32: "I",
    _tables.DataType_Uint64: "Q",
    _tables.DataType_Float32: "f",
    _tables.DataType_Float64: "d",
    _tables.DataType_Date32: "i",
    _tables.DataType_Timestamp: "q",
}

_TYPE_NAMES = {
    _tables.DataType_Null: "null",
    _tables.DataType_Boolean: "bool",
    _tables.DataType_Int8: "int8",
    _tables.DataType_Int16: "int16",
    _tables.DataType_Int32: "int32",
    _tables.DataType_Int64: "int64",
    _tables.DataType_Uint8: "uint8",
    _tables.DataType_Uint16: "uint16",
    _tables.DataType_Uint32: "uint32",
    _tables.DataType_Uint64: "uint64",
    _tables.DataType_Float32: "float32",
    _tables.DataType_Float64: "float64",
    _tables.DataType_Utf8: "utf8",
    _tables.DataType_LargeUtf8: "large_utf8",
    _tables.DataType_Binary: "binary",
    _tables.DataType_LargeBinary: "large_binary",
    _tables.DataType_Date32: "date32",
    _tables.DataType_Timestamp: "timestamp",
}


def _type_name(t: Any) -> str:
    name = _TYPE_NAMES.get(type(t))
    return name if name is not None else f"other:{t.value}"


class Column:
    """One column of one batch, over its raw Arrow buffers."""

    def __init__(self, raw: Any):
        self._raw = raw
        self.type: str = _type_name(raw.data_type)
        self.length: int = raw.len
        self.null_count: int = raw.null_count

    def __len__(self) -> int:
        return self.length

    @property
    def values(self) -> memoryview:
        """The values as a typed memoryview (fixed-width types) or raw bytes."""
        code = _CODES.get(type(self._raw.data_type))
        mv = memoryview(self._raw.values)
        return mv.cast(code) if code else mv

    def is_valid(self, i: int) -> bool:
        bits = self._raw.validity
        return bits is None or bool(bits[i >> 3] & (1 << (i & 7)))

    def to_list(self) -> List[Any]:
        """Python values, with None for nulls (dates as days since 1970-01-01)."""
        raw = self._raw
        n = raw.len
        kind = type(raw.data_type)
        if kind in (_tables.DataType_Utf8, _tables.DataType_Binary, _tables.DataType_LargeUtf8, _tables.DataType_LargeBinary):
            wide = kind in (_tables.DataType_LargeUtf8, _tables.DataType_LargeBinary)
            offs = memoryview(raw.offsets).cast("q" if wide else "i")
            data = raw.values
            text = kind in (_tables.DataType_Utf8, _tables.DataType_LargeUtf8)
            out: List[Any] = [data[offs[i]:offs[i + 1]] for i in range(n)]
            if text:
                out = [b.decode("utf-8") for b in out]
        elif kind is _tables.DataType_Boolean:
            vals = raw.values
            out = [bool(vals[i >> 3] & (1 << (i & 7))) for i in range(n)]
        elif kind is _tables.DataType_Null:
            return [None] * n
        else:
            out = self.values.tolist()
        if raw.validity is not None and raw.null_count:
            bits = raw.validity
            out = [v if bits[i >> 3] & (1 << (i & 7)) else None for i, v in enumerate(out)]
        return out


    def numpy(self) -> Any:
        """The column as a numpy array over the batch's Arrow buffer, without a copy.

        Needs an analysis that imports numpy at module level (``scripts/build-python.sh``
        then bundles numpy for WASI). Fixed-width columns only (dates as int32 days since
        1970-01-01, timestamps as int64); booleans are unpacked (a copy). A column with nulls
        comes back as a ``numpy.ma.MaskedArray`` whose mask marks them.
        """
        import numpy  # the analysis imported it at module level, so this is a lookup

        raw = self._raw
        kind = type(raw.data_type)
        if kind is _tables.DataType_Boolean:
            bits = numpy.frombuffer(raw.values, dtype=numpy.uint8)
            values = numpy.unpackbits(bits, bitorder="little")[: raw.len].astype(bool)
        else:
            code = _CODES.get(kind)
            if code is None:
                raise AnalysisError(
                    f"a {self.type} column has no numpy view; use to_list() for text and binary"
                )
            values = numpy.frombuffer(raw.values, dtype=numpy.dtype(code).newbyteorder("<"), count=raw.len)
        if raw.validity is None or not raw.null_count:
            return values
        valid = numpy.unpackbits(numpy.frombuffer(raw.validity, dtype=numpy.uint8), bitorder="little")
        return numpy.ma.masked_array(values, mask=~valid[: raw.len].astype(bool))


class Batch:
    """One record batch; read its columns by name or index."""

    def __init__(self, table: "Table", inner: Any):
        self._table = table
        self._inner = inner

    @property
    def num_rows(self) -> int:
        return self._inner.num_rows()

    def column(self, key: Any) -> Column:
        index = self._table.index(key) if isinstance(key, str) else key
        try:
            return Column(self._inner.column(index))
        except Err as e:
            raise _table_error(e)

    def ipc(self) -> bytes:
        """The batch as an Arrow IPC message, for guests that decode IPC."""
        return self._inner.ipc()


class Table:
    """A granted table."""

    def __init__(self, name: str):
        try:
            self._inner = _tables.open(name)
        except Err as e:
            raise _table_error(e)
        self.name = name
        cols = self._inner.columns()
        self.columns: List[Tuple[str, str]] = [(c.name, _type_name(c.data_type)) for c in cols]
        self._index = {c.name: i for i, c in enumerate(cols)}

    @property
    def column_names(self) -> List[str]:
        return [name for name, _ in self.columns]

    @property
    def num_rows(self) -> int:
        return self._inner.num_rows()

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise AnalysisError(f"table {self.name!r} has no column {name!r}; it has {self.column_names}")

    def batches(self) -> Iterator[Batch]:
        """The table's batches, from the first."""
        self._inner.rewind()
        while True:
            try:
                inner = self._inner.next_batch()
            except Err as e:
                raise _table_error(e)
            if inner is None:
                return
            yield Batch(self, inner)

    def column(self, name: str) -> List[Any]:
        """A whole column as a Python list (None for nulls)."""
        index = self.index(name)
        out: List[Any] = []
        for batch in self.batches():
            out.extend(batch.column(index).to_list())
        return out

    def numpy(self, name: str) -> Any:
        """A whole column as one numpy array: the batch's own buffer when the table has one
        batch, else one concatenation (see ``Column.numpy``; ``numpy_columns`` streams)."""
        import numpy

        index = self.index(name)
        parts = [batch.column(index).numpy() for batch in self.batches()]
        if len(parts) == 1:
            return parts[0]
        if any(isinstance(p, numpy.ma.MaskedArray) for p in parts):
            return numpy.ma.concatenate(parts)
        return numpy.concatenate(parts) if parts else numpy.empty(0)

    def rows(self, columns: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
        """Rows as dicts, batch by batch (only `columns`, if given)."""
        names = list(columns) if columns is not None else self.column_names
        indices = [self.index(n) for n in names]
        for batch in self.batches():
            cols = [batch.column(i).to_list() for i in indices]
            for values in zip(*cols):
                yield dict(zip(names, values))


def numpy_columns(table: Any, columns: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
    """Batch by batch, ``{column: numpy array}`` over each batch's Arrow buffers (no copies;
    see ``Column.numpy``). ``table`` is a ``Table`` or a granted table's name."""
    t = table if isinstance(table, Table) else open(table)
    names = list(columns) if columns is not None else t.column_names
    indices = [t.index(n) for n in names]
    for batch in t.batches():
        yield {n: batch.column(i).numpy() for n, i in zip(names, indices)}


def open(name: str) -> Table:  # noqa: A001 - mirrors the WIT function
    """Open a granted table by name."""
    return Table(name)


def table_names() -> List[str]:
    """Names of the tables granted to this run."""
    return list(_tables.granted())


def _bits(valid: List[bool]) -> bytes:
    out = bytearray((len(valid) + 7) // 8)
    for i, ok in enumerate(valid):
        if ok:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


_PUBLISH_TYPES = ("bool", "int64", "float64", "utf8")


def _raw_column(values: Sequence[Any], kind: Optional[str] = None) -> Any:
    """Encode a list of Python values as a raw Arrow column of type ``kind``
    (inferred from the values when not given)."""
    if kind is not None and kind not in _PUBLISH_TYPES:
        raise AnalysisError(f"cannot publish type {kind!r}; use one of {_PUBLISH_TYPES}")
    present = [v for v in values if v is not None]
    if kind is None:
        kind = _infer(present)
    valid = [v is not None for v in values]
    nulls = len(values) - len(present)
    validity = _bits(valid) if nulls else None
    if kind == "bool":
        return _tables.RawColumn(_tables.DataType_Boolean(), len(values), nulls, validity, None, _bits([bool(v) for v in values]))
    if kind == "int64":
        data = array("q", [v if v is not None else 0 for v in values]).tobytes()
        return _tables.RawColumn(_tables.DataType_Int64(), len(values), nulls, validity, None, data)
    if kind == "float64":
        data = array("d", [float(v) if v is not None else 0.0 for v in values]).tobytes()
        return _tables.RawColumn(_tables.DataType_Float64(), len(values), nulls, validity, None, data)
    encoded = [str(v).encode("utf-8") if v is not None else b"" for v in values]
    offsets = array("i", [0])
    total = 0
    for b in encoded:
        total += len(b)
        offsets.append(total)
    return _tables.RawColumn(_tables.DataType_Utf8(), len(values), nulls, validity, offsets.tobytes(), b"".join(encoded))


def _infer(present: Sequence[Any]) -> str:
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    if all(isinstance(v, str) for v in present):
        return "utf8"
    kinds = sorted({type(v).__name__ for v in present})
    raise AnalysisError(f"cannot publish a column mixing {kinds}; pass types= to choose one of {_PUBLISH_TYPES}")


def publish_table(
    name: str,
    columns: Dict[str, Sequence[Any]],
    types: Optional[Dict[str, str]] = None,
    counts: Sequence[str] = (),
) -> None:
    """Publish a table given as ``{column name: list of values}``; ``types``
    optionally fixes column types (bool, int64, float64, utf8), which matters
    when a column may be empty. ``counts`` names the columns holding group
    counts: the data owners' small-group rules apply to them, and a table with
    a declared count column can be released without review."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise AnalysisError(f"columns of table {name!r} have different lengths {sorted(lengths)}")
    missing = [c for c in counts if c not in columns]
    if missing:
        raise AnalysisError(f"count columns {missing} are not columns of table {name!r}")
    if counts:
        _output.declare_counts(name, list(counts))
    types = types or {}
    raw = [(col, _raw_column(values, types.get(col))) for col, values in columns.items()]
    try:
        _output.publish_columns(name, raw)
    except Err as e:
        raise _output_error(e)


def publish_ipc(name: str, ipc: bytes) -> None:
    """Publish a table given as a complete Arrow IPC stream."""
    try:
        _output.publish_table(name, ipc)
    except Err as e:
        raise _output_error(e)


def publish_json(name: str, value: Any) -> None:
    """Publish a JSON-serialisable value."""
    try:
        _output.publish_json(name, json.dumps(value))
    except Err as e:
        raise _output_error(e)


def publish_file(name: str, contents: bytes) -> None:
    """Publish a small file."""
    try:
        _output.publish_file(name, contents)
    except Err as e:
        raise _output_error(e)


def info(message: str) -> None:
    """Log at info level (logs are output: never log row-level data)."""
    _output.log(_output.Level.INFO, message)


def warn(message: str) -> None:
    _output.log(_output.Level.WARN, message)


def debug(message: str) -> None:
    _output.log(_output.Level.DEBUG, message)


_OPS = {
    "=": _aggregate.Comparison.EQ,
    "==": _aggregate.Comparison.EQ,
    "!=": _aggregate.Comparison.NE,
    "<": _aggregate.Comparison.LT,
    "<=": _aggregate.Comparison.LE,
    ">": _aggregate.Comparison.GT,
    ">=": _aggregate.Comparison.GE,
    "is null": _aggregate.Comparison.IS_NULL,
    "not null": _aggregate.Comparison.NOT_NULL,
}


def _statistic(s: Any) -> Any:
    if s == "count":
        return _aggregate.Statistic_Count()
    if s == "sum":
        return _aggregate.Statistic_Sum()
    if s == "mean":
        return _aggregate.Statistic_Mean()
    if s == "median":
        return _aggregate.Statistic_Quantile(0.5)
    if isinstance(s, tuple) and len(s) == 2 and s[0] == "quantile":
        return _aggregate.Statistic_Quantile(float(s[1]))
    raise AnalysisError(
        f"unknown statistic {s!r}: use 'count', 'sum', 'mean', 'median' or ('quantile', p)"
    )


def aggregate(
    name: str,
    table: str,
    *,
    statistics: Sequence[Any] = ("count",),
    group_by: Sequence[str] = (),
    value: Optional[str] = None,
    where: Sequence[Tuple[str, str, Any]] = (),
    bounds: Optional[Tuple[float, float]] = None,
    epsilon: Optional[float] = None,
    computed: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """Have the host aggregate a granted table, publish the result as output ``name`` and
    return it as released: one dict per group, keys then statistics (``None`` where a
    rule suppressed the cell).

    The host knows who each row is about and applies the owners' rules per cell (distinct
    people, dominance, rounding) or, on a table that requires differential privacy, adds
    noise and charges ``epsilon`` to the run's budget::

        rows = cleanroom.aggregate(
            "sbp_by_sex", "patients", group_by=["sex"], value="sbp",
            statistics=["count", "mean", "median"], bounds=(60, 250), epsilon=0.2)

    ``where`` keeps rows by ``(column, op, value)`` with op one of ``= != < <= > >= "is
    null" "not null"``. ``computed`` (disclosure control only) aggregates entries computed
    here: ``{"key_names": [...], "rows": [table row per entry], "keys": [[...]],
    "values": [...]}``.
    """
    try:
        filters = [
            _aggregate.Condition(column=c, op=_OPS[op], value=str(v)) for (c, op, v) in where
        ]
    except KeyError as e:
        raise AnalysisError(f"unknown comparison {e}: use one of {sorted(_OPS)}")
    comp = None
    if computed is not None:
        comp = _aggregate.Computed(
            key_names=list(computed.get("key_names", [])),
            rows=[int(r) for r in computed.get("rows", [])],
            keys=[[str(k) for k in ks] for ks in computed.get("keys", [])],
            values=[float(v) for v in computed.get("values", [])],
        )
    request = _aggregate.Request(
        table=table,
        group_by=list(group_by),
        value=value,
        filter=filters,
        computed=comp,
        statistics=[_statistic(s) for s in statistics],
        bounds=(float(bounds[0]), float(bounds[1])) if bounds is not None else None,
        epsilon=float(epsilon) if epsilon is not None else None,
    )
    try:
        result = _aggregate.aggregate(name, request)
    except Err as e:
        v = e.value
        kind = type(v).__name__.split("_", 1)[-1]
        raise AnalysisError(f"aggregate refused ({kind}): {v.value}")
    rows = []
    for cell in result.cells:
        row: Dict[str, Any] = dict(zip(result.key_names, cell.keys))
        row.update(zip(result.statistic_names, cell.values))
        rows.append(row)
    return rows
