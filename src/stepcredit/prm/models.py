"""Saving and loading process reward models: a directory with ``config.json`` and ``model.safetensors``.

Every model class has a ``kind`` (the ``"kind"`` of its config), ``config() -> dict`` (plain
JSON), ``tensors() -> {name: array}`` and ``from_saved(config, tensors, where)``. Weights are
written with safetensors (never pickle); the directory is written to a temporary sibling and
renamed, so an error never leaves a half-written model.

    save_model(model, "prm/")            # prm/config.json, prm/model.safetensors
    model = load_model("prm/")           # the same class, the same scores
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stepcredit.prm.feature_model import FeaturePRM, PRMError

__all__ = ["MODEL_KINDS", "load_model", "register_model_kind", "save_model"]

CONFIG, WEIGHTS = "config.json", "model.safetensors"
_FORMAT = 1

#: kind -> loader(config, tensors, where) of the model classes (torch ones register on import)
MODEL_KINDS: dict[str, Callable[[Mapping[str, Any], Mapping[str, np.ndarray], str], Any]] = {
    FeaturePRM.kind: FeaturePRM.from_saved,
}


def register_model_kind(kind: str, loader: Callable[[Mapping[str, Any], Mapping[str, np.ndarray], str], Any]) -> None:
    """Make :func:`load_model` read models of ``kind`` with ``loader(config, tensors, where)``."""
    MODEL_KINDS[kind] = loader


def _safetensors_numpy() -> Any:
    try:
        from safetensors import numpy as stn
    except ImportError:
        raise PRMError("saving and loading reward models needs safetensors: pip install 'stepcredit[prm]'") from None
    return stn


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Write ``model`` to the directory ``path`` (created or replaced as a whole).

    Returns:
        The directory.
    """
    stn = _safetensors_numpy()
    out = Path(path)
    cfg = {"format": _FORMAT, **model.config()}
    tensors = {k: np.ascontiguousarray(v) for k, v in model.tensors().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        stn.save_file(tensors, str(tmp / WEIGHTS))
        if out.exists():
            if not (out / CONFIG).is_file():
                raise PRMError(f"{out}: exists and is not a saved model directory; refusing to replace it")
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(path: str | os.PathLike) -> Any:
    """Read a model written by :func:`save_model`.

    Raises:
        PRMError: a missing or unreadable file, an unknown kind, or weights that do not fit the config.
    """
    d = Path(path)
    cfg_path, w_path = d / CONFIG, d / WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise PRMError(f"{d}: not a saved model (needs {CONFIG} and {WEIGHTS})")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PRMError(f"{cfg_path}: unreadable config ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != _FORMAT:
        raise PRMError(f"{cfg_path}: not a stepcredit model config (format {cfg.get('format') if isinstance(cfg, dict) else None!r}, expected {_FORMAT})")
    kind = cfg.get("kind")
    if kind not in MODEL_KINDS and kind in ("torch", "implicit"):
        import stepcredit.prm.torch_models  # noqa: F401  (registers the torch kinds)
    loader = MODEL_KINDS.get(kind)
    if loader is None:
        raise PRMError(f"{cfg_path}: unknown model kind {kind!r}; known: {', '.join(sorted(MODEL_KINDS))}")
    stn = _safetensors_numpy()
    try:
        tensors = stn.load_file(str(w_path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise PRMError(f"{w_path}: unreadable weights ({exc})") from None
    return loader(cfg, tensors, str(d))
