"""Vectorised 64-bit hashing of state, action, node and reference keys.

A key is a string or an integer. Equal keys in one group are what anchor-state methods
(GiGPO, SALT) and tree methods match on, so the hash must be deterministic across processes,
files and machines (unlike Python's salted ``hash``).

The hash
--------
* **Strings**: 64-bit FNV-1a over the UTF-8 bytes (offset basis 0xcbf29ce484222325, prime
  0x100000001b3), then the splitmix64 finaliser (Steele, Lea, Flood 2014) so that every output
  bit depends on every input bit.
* **Integers**: splitmix64 of the two's-complement 64-bit value XOR a fixed tag, so that the
  integer ``5`` and the string ``"5"`` hash differently.

Strings are first dictionary-encoded with Arrow (exact, C++ hash table), so only the distinct
strings are hashed. The FNV loop runs over byte *positions* (at most the longest string),
vectorised across all distinct strings that are at least that long; the work is O(total bytes
of distinct strings).

Collision probability
---------------------
Treating the 64-bit outputs of n distinct keys as uniform, the probability that any two of
them collide is about n(n-1)/2^65: 2.7e-8 for one million distinct states, 2.7e-4 for 100
million. Keys are only ever compared within one group, so the relevant n is the number of
distinct states of a group, which makes a collision far less likely still. FNV-1a is not a
cryptographic hash: keys chosen by an adversary to collide can be built.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["hash_keys", "splitmix64"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_INT_TAG = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied elementwise to a uint64 array (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _hash_unique_strings(arr: pa.Array) -> np.ndarray:
    """FNV-1a + splitmix64 of each string of a (non-null) Arrow string array."""
    arr = arr.cast(pa.large_string()) if not pa.types.is_large_string(arr.type) else arr
    n = len(arr)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return h
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1 + arr.offset)[arr.offset :]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    order = np.argsort(-lengths, kind="stable")  # longest first: active strings are a prefix
    sorted_len = lengths[order]
    sorted_start = starts[order]
    hs = h[order]
    max_len = int(sorted_len[0]) if n else 0
    # number of strings with length > k, for each k
    counts = np.searchsorted(-sorted_len, -np.arange(max_len), side="left")
    with np.errstate(over="ignore"):
        for k in range(max_len):
            m = counts[k]
            hs[:m] ^= data[sorted_start[:m] + k].astype(np.uint64)
            hs[:m] *= _FNV_PRIME
    out = np.empty(n, dtype=np.uint64)
    out[order] = hs
    return splitmix64(out)


def hash_keys(values: pa.Array | pa.ChunkedArray | np.ndarray | list) -> np.ndarray:
    """Hash string or integer keys to uint64, vectorised.

    Args:
        values: [N] strings or integers (an Arrow array, a NumPy array or a list). Nulls are
            not allowed (the caller validates presence first).

    Returns:
        [N] uint64 hashes. Equal keys give equal hashes in every process and on every machine.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return splitmix64(values.astype(np.int64).view(np.uint64) ^ _INT_TAG)
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.uint64)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError("hash_keys: keys must not be null")
    if pa.types.is_integer(arr.type):
        return splitmix64(arr.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64) ^ _INT_TAG)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(f"hash_keys: keys must be strings or integers, got {arr.type}")
    enc = pc.dictionary_encode(arr)
    uniq_hash = _hash_unique_strings(enc.dictionary)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    return uniq_hash[idx]
