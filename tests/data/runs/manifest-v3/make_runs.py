"""Writes tests/data/runs/manifest-v3: runs of the JSON manifest (formats 2 and 3: per-call
columns in manifest.json, raw dtypes recorded), made with acme_xr 532ab5c, the last commit
before manifest format 4:

    git archive 532ab5c | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/data/runs/manifest-v3/make_runs.py tests/data/runs/manifest-v3

``hdf5``: checksums on (written as format_version 2 with raw dtypes and start times);
``unchecked``: checksums off (format_version 3: spans and sizes without checksums).
Both: HDF5 payloads, call 2 fails, result_0 is ragged (call i returns i + 1 floats),
result_1 is a labelled xarray value with a coordinate shared by every call.
"""

import os
import shutil
import sys

import dask
import numpy as np
import xarray as xr

from acme_xr import ParallelMap


def legacy(i):
    if i == 2:
        raise ValueError("call 2 fails on purpose")
    ragged = np.arange(i + 1, dtype="<f8") * 10 + i
    labelled = xr.DataArray(np.array([i, -i], np.int32), dims=("side",),
                            coords={"side": ["left", "right"]}, attrs={"units": "mV"})
    return ragged, labelled


if __name__ == "__main__":
    for name, checksums in (("hdf5", True), ("unchecked", False)):
        out = os.path.join(sys.argv[1], name)
        shutil.rmtree(out, ignore_errors=True)
        with dask.config.set({"acme_xr.payload.checksums": checksums}):
            pm = ParallelMap(legacy, [0, 1, 2, 3], output_dir=out, verbose=False, n_workers=1)
            try:
                pm.compute(debug=False)
            except Exception as e:
                print(type(e).__name__)
        os.remove(os.path.join(out, "legacy.log"))
