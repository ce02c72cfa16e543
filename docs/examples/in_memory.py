"""Results in memory, and reproducible random numbers with ``seed=``."""

import numpy as np

from acme_xr import ParallelMap


def bootstrap(trial, rng):
    data = np.arange(10.0) + trial  # stands in for loading trial `trial`
    return rng.choice(data, size=(200, data.size)).mean(axis=1).std()


if __name__ == "__main__":
    # write_worker_results=False: compute() returns the values instead of file names
    values = ParallelMap(bootstrap, range(6), seed=2026, write_worker_results=False,
                         n_workers=2).compute()
    print(values)

    # call i drew from its own generator, whatever worker or batch it ran in:
    for i, value in enumerate(values):
        rng = np.random.default_rng(np.random.SeedSequence(2026, spawn_key=(i,)))
        assert value == bootstrap(i, rng)
