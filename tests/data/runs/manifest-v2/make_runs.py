"""Writes tests/data/runs/manifest-v2: a run of manifest format 2 (checksums and data spans,
no raw dtypes), made with acme_xr cac4b5c:

    git archive cac4b5c | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/data/runs/manifest-v2/make_runs.py tests/data/runs/manifest-v2
"""

import os
import shutil
import sys

import numpy as np

from acme_xr import ParallelMap


def legacy(i):
    if i == 2:
        raise ValueError("call 2 fails on purpose")
    # call 1's floats big-endian and call 0's integer int32: same-size bytes of another
    # dtype, which a format-2 manifest does not record
    floats = np.array([0.0, i, 2.0 * i], dtype=">f8" if i == 1 else "<f8")
    return floats, np.array(i, np.int32 if i == 0 else np.int64), np.array([i % 2 == 0, True]), \
        np.datetime64(i, "ns")


if __name__ == "__main__":
    out = os.path.join(sys.argv[1], "hdf5")
    shutil.rmtree(out, ignore_errors=True)
    pm = ParallelMap(legacy, [0, 1, 2, 3], output_dir=out, verbose=False, n_workers=1)
    try:
        pm.compute(debug=False)
    except Exception as e:
        print(type(e).__name__)
