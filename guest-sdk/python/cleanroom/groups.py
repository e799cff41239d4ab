"""Group-by helpers with small-cell suppression, in pure Python."""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple


@dataclass
class GroupStats:
    """Released groups (sorted by key) and how many were suppressed."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    suppressed: int = 0

    def columns(self) -> Dict[str, List[Any]]:
        """The rows as ``{column: values}``, ready for ``publish_table``."""
        if not self.rows:
            return {}
        return {k: [r[k] for r in self.rows] for k in self.rows[0]}


def group_stats(
    rows: Iterable[Dict[str, Any]],
    key: Callable[[Dict[str, Any]], Any],
    means: Sequence[str] = (),
    rates: Sequence[str] = (),
    min_count: int = 10,
    key_name: str = "group",
    count_name: str = "count",
) -> GroupStats:
    """Count rows per ``key(row)``, with the mean of each field in ``means``
    and the percentage of truthy values of each field in ``rates``. Groups
    with fewer than ``min_count`` rows are suppressed, not released."""
    acc: Dict[Any, Tuple[int, List[float], List[int]]] = {}
    for row in rows:
        k = key(row)
        n, sums, hits = acc.get(k) or (0, [0.0] * len(means), [0] * len(rates))
        for i, name in enumerate(means):
            sums[i] += row[name]
        for i, name in enumerate(rates):
            hits[i] += 1 if row[name] else 0
        acc[k] = (n + 1, sums, hits)
    out = GroupStats()
    for k in sorted(acc):
        n, sums, hits = acc[k]
        if n < min_count:
            out.suppressed += 1
            continue
        row: Dict[str, Any] = {key_name: k, count_name: n}
        for i, name in enumerate(means):
            row[f"mean_{name}"] = sums[i] / n
        for i, name in enumerate(rates):
            row[f"{name}_pct"] = 100.0 * hits[i] / n
        out.rows.append(row)
    return out
