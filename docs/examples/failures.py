"""A call that fails: the others are kept, the error names it, the Dataset shows the gap."""

import numpy as np

from acme_xr import ParallelMap, open_results
from acme_xr.errors import ComputeError


def invert(x):
    if x == 0:
        raise ZeroDivisionError("x is 0")
    return np.full(3, 1 / x)


if __name__ == "__main__":
    try:
        ParallelMap(invert, [-1, 0, 1, 2], output_dir="run1", n_workers=2).compute()
    except ComputeError as err:
        print(err)  # which calls failed, with their exceptions and the first traceback
        failed = err.failed  # {1: {"type": "ZeroDivisionError", "message": ..., ...}}
    assert list(failed) == [1]

    ds = open_results("run1")
    print(ds.status.values)  # ['done' 'failed' 'done' 'done']
    print(ds.result_0.values)  # the failed call's row reads NaN, never a silent 0
    assert np.isnan(ds.result_0.values[1]).all()
