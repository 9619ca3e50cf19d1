"""Reward transforms: registered pure functions ``(Rollouts, **params) -> Shaped``.

Importing this package registers every built-in transform (``stepcredit transforms`` lists
them; ``docs/shaping.md`` describes each).
"""

from stepcredit.shaping import (  # noqa: F401  (registers the transforms)
    composite,
    custom,
    gating,
    length,
    preference,
    prm,
    tools,
)
from stepcredit.shaping.gating import gated
from stepcredit.shaping.registry import (
    Shaped,
    ShapingError,
    TransformSpec,
    apply_transform,
    get_transform,
    list_transforms,
    parse_transform_param,
    register_transform,
)

__all__ = [
    "Shaped",
    "ShapingError",
    "TransformSpec",
    "apply_transform",
    "gated",
    "get_transform",
    "list_transforms",
    "parse_transform_param",
    "register_transform",
]
