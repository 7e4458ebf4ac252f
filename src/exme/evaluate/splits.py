"""The data a task is evaluated on: a split of its data set, or a slice of one in the notation of
`datasets` (`test[:50%]`, `train[:500]`), so that a task whose data have a single split (HumanEval,
GSM8K's test) can still give a dev and a disjoint test. A slice reaches lm-eval as its public
`samples` argument (the CLI's `--samples`): the task's own YAML and processing are unchanged.

Imports nothing heavy: the config check reads it while Snakemake builds the DAG.
"""

import math
import re
from dataclasses import dataclass

from exme.errors import ExmeError

_SPEC = re.compile(r"(?P<name>[^\[\]:]+)(?:\[(?P<start>\d+%?)?:(?P<stop>\d+%?)?\])?")


@dataclass(frozen=True)
class Split:
    """A split `name`, whole or from `start` to `stop` (item counts, or percentages when `percent`)."""

    name: str
    start: int | None = None
    stop: int | None = None
    percent: bool = False

    @property
    def sliced(self) -> bool:
        return self.start is not None or self.stop is not None

    def indices(self, n_items: int) -> range:
        """The indices of the items of a split of n_items items; percentages round to the nearest
        item, as `datasets` rounds them."""
        if not self.sliced:
            return range(n_items)

        def bound(value: int | None, default: int) -> int:
            if value is None:
                return default
            return min(n_items, math.floor(n_items * value / 100 + 0.5) if self.percent else value)

        return range(bound(self.start, 0), bound(self.stop, n_items))

    def disjoint(self, other: "Split") -> bool | None:
        """Whether the two never share an item; None where their units differ and it depends on
        the split's size."""
        if self.name != other.name:
            return True
        if not (self.sliced and other.sliced):
            return False
        if self.percent != other.percent:
            return None
        infinity = math.inf
        return (self.stop if self.stop is not None else infinity) <= (other.start or 0) or (
            other.stop if other.stop is not None else infinity
        ) <= (self.start or 0)


def parse_split(spec: str, key: str) -> Split:
    """`test`, `test[:50%]`, `test[50%:]`, `train[100:600]`; `key` names the config entry in errors."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise ExmeError(
            f"{key}: {spec!r} is not a split name or a slice of one such as 'test[:50%]' or 'train[:500]'"
        )
    start, stop = match["start"], match["stop"]
    units = {bound.endswith("%") for bound in (start, stop) if bound is not None}
    if len(units) > 1:
        raise ExmeError(f"{key}: {spec!r} mixes a percentage and an item count")
    percent = units == {True}

    def number(bound: str | None) -> int | None:
        if bound is None:
            return None
        value = int(bound.rstrip("%"))
        if percent and value > 100:
            raise ExmeError(f"{key}: {spec!r} has a percentage over 100")
        return value

    split = Split(match["name"].strip(), number(start), number(stop), percent)
    if split.start is not None and split.stop is not None and split.start >= split.stop:
        raise ExmeError(f"{key}: {spec!r} is empty (its start is not before its stop)")
    return split


def sample_indices(split: Split, n_items: int, limit: int | float | None) -> list[int]:
    """The items lm-eval evaluates: the split's slice, then the first `limit` of it (lm-eval's
    `--limit`: a count, or a fraction below 1)."""
    indices = list(split.indices(n_items))
    if limit is not None:
        indices = indices[: math.ceil(len(indices) * limit) if limit < 1 else int(limit)]
    if not indices:
        raise ExmeError(f"split {split.name!r}: the slice selects none of its {n_items} items")
    return indices
