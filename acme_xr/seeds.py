"""Per-call random streams for ``ParallelMap(..., seed=S)``.

Call ``i`` draws from ``numpy.random.SeedSequence(S, spawn_key=(i,))``, which is the
``i``-th child of ``SeedSequence(S).spawn``. The stream depends on the seed and the call
index only: not on the batch a call runs in, the worker, the attempt (a retried call gets a
fresh generator from the same sequence) or the order in which a resumed run finishes its
calls. A :class:`numpy.random.SeedSequence` given as ``S`` works the same way: call ``i``
gets its child ``i`` (counted from 0, whatever the sequence spawned before; acme_xr never
changes the user's sequence).

Examples
--------
>>> import numpy as np
>>> seed = check_seed(42)
>>> a = call_rng(seed, 3).random(2)
>>> b = np.random.default_rng(np.random.SeedSequence(42).spawn(4)[3]).random(2)
>>> bool((a == b).all())
True
>>> seed_record(seed)
{'entropy': 42, 'spawn_key': [], 'pool_size': 4}
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .errors import InputError, InputTypeError

__all__ = ["check_seed", "call_seed", "call_rng", "seed_record"]

_WHAT = "None, a whole number >= 0 or a numpy.random.SeedSequence"


def check_seed(seed: Any) -> np.random.SeedSequence | None:
    """The validated ``seed=`` of a ParallelMap as a SeedSequence (``None`` stays ``None``).

    Raises
    ------
    InputTypeError
        ``seed`` is neither an integer nor a SeedSequence (a Generator, a float, ...).
    InputError
        ``seed`` is a negative integer.
    """
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        hint = ""
        if isinstance(seed, (np.random.Generator, np.random.RandomState)):
            # a generator carries state that one stream per call cannot be derived from
            hint = "; a Generator cannot be split per call, pass the number it was seeded with"
        raise InputTypeError(
            f"seed must be {_WHAT}, not {seed!r} ({type(seed).__name__}){hint}"
        )
    if seed < 0:
        raise InputError(f"seed={seed} is not valid: give {_WHAT}")
    return np.random.SeedSequence(int(seed))


def call_seed(seed: np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    """The SeedSequence of call ``i``: child ``i`` of ``seed``."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, int(i)),
                                  pool_size=seed.pool_size)


def call_rng(seed: np.random.SeedSequence, i: int) -> np.random.Generator:
    """A new Generator for call ``i``; every call of this function starts the same stream."""
    return np.random.default_rng(call_seed(seed, i))


def seed_record(seed: np.random.SeedSequence | None) -> dict[str, Any] | None:
    """The seed as JSON types, for the run's manifest (what a resume must match)."""
    if seed is None:
        return None
    entropy: Any = seed.entropy
    if isinstance(entropy, numbers.Integral):
        entropy = int(entropy)
    elif entropy is not None:
        entropy = [int(e) for e in entropy]
    return {"entropy": entropy, "spawn_key": [int(k) for k in seed.spawn_key],
            "pool_size": int(seed.pool_size)}
