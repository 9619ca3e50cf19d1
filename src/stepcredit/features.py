"""Hashed text features (NumPy): the input of the MLP / GRU policies and the feature PRM.

**Features** (:func:`text_features`, no vocabulary): a text is turned into tokens of three
families, each hashed (64-bit FNV-1a + splitmix64, ``stepcredit.data.hashing``: the same in every
process) into one of F buckets with a ±1 sign taken from another bit of the hash:

* words: the lower-cased whitespace-separated words (``"press"``, ``"3"``, ``"1/4"``);
* character trigrams of each line, with ``^``/``$`` marking the line's ends;
* positioned characters: (row, column, character) for every character of a line of at most
  40 characters, so a drawn grid (keydoor, sokoban) becomes a one-hot picture of its cells.

Each family's bucket vector is divided by its L2 norm, and the sum of the families by √(number
of non-empty families), so every text has a feature vector φ of norm about 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stepcredit.data.hashing import hash_keys

__all__ = ["text_features"]

_GRID_LINE = 40  # lines at most this long also give positioned-character features


def _tokens(text: str) -> tuple[list[str], list[str], list[str]]:
    words = [f"w {w}" for w in text.lower().split()]
    grams: list[str] = []
    pos: list[str] = []
    for r, line in enumerate(text.split("\n")):
        padded = f"^{line}$"
        grams.extend(f"c {padded[i:i + 3]}" for i in range(len(padded) - 2))
        if len(line) <= _GRID_LINE:
            pos.extend(f"p {r} {c} {ch}" for c, ch in enumerate(line))
    return words, grams, pos


def text_features(texts: Sequence[str], size: int) -> np.ndarray:
    """Hashed bag-of-words, character-trigram and positioned-character features of texts.

    Args:
        texts: [N] texts.
        size: F, the number of buckets (>= 1).

    Returns:
        [N, F] float64; row n is Σ_families v_f / ‖v_f‖ / √(non-empty families) with v_f the
        signed bucket counts of family f of text n (see the module docstring); 0 for "".
    """
    N = len(texts)
    toks: list[str] = []
    slot: list[int] = []  # text n, family f -> 3n + f
    for n, text in enumerate(texts):
        for f, fam in enumerate(_tokens(str(text))):
            toks.extend(fam)
            slot.extend([3 * n + f] * len(fam))
    if not toks:
        return np.zeros((N, size), dtype=np.float64)
    h = hash_keys(toks)
    bucket = (h % np.uint64(size)).astype(np.int64)
    sign = np.where((h >> np.uint64(40)) & np.uint64(1), 1.0, -1.0)
    v = np.bincount(np.asarray(slot, dtype=np.int64) * size + bucket, weights=sign, minlength=3 * N * size).reshape(N, 3, size)
    norm = np.linalg.norm(v, axis=2, keepdims=True)
    fams = np.bincount(np.asarray(slot, dtype=np.int64), minlength=3 * N).reshape(N, 3) > 0
    v = np.where(norm > 0, v / np.where(norm > 0, norm, 1.0), 0.0).sum(axis=1)
    return v / np.sqrt(np.maximum(fams.sum(axis=1), 1))[:, None]
