"""Credit filters: registered pure functions ``(Rollouts, Credit, **params) -> Filtered``.

Importing this package registers every built-in filter (``stepcredit filters`` lists them;
``docs/shaping.md`` describes each).
"""

from stepcredit.filters import collapse, prof  # noqa: F401  (registers the filters)
from stepcredit.filters.registry import (
    FilterError,
    FilterSpec,
    Filtered,
    apply_filter,
    get_filter,
    list_filters,
    parse_filter_param,
    register_filter,
)

__all__ = [
    "FilterError",
    "FilterSpec",
    "Filtered",
    "apply_filter",
    "get_filter",
    "list_filters",
    "parse_filter_param",
    "register_filter",
]
