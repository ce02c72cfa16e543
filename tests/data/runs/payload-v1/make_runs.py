import os
import shutil
import sys

import numpy as np
import xarray as xr

from acme_xr import ParallelMap


def legacy(i):
    if i == 2:
        raise ValueError("call 2 fails on purpose")
    da = xr.DataArray(np.arange(3.0) * i, dims=("freq",), coords={"freq": [1.0, 2.0, 4.0]},
                      attrs={"units": "V"})
    return da, np.int64(10 * i), np.arange(2, dtype=np.int32) * i

if __name__ == "__main__":
    base = sys.argv[1]
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    for name, kw in [("hdf5", {}), ("single_file", {"single_file": True}), ("zarr", {"storage": "zarr"})]:
        out = os.path.join(base, name)
        pm = ParallelMap(legacy, [0, 1, 2, 3], output_dir=out, verbose=False, n_workers=1, **kw)
        try:
            pm.compute(debug=False)
        except Exception as e:
            print(name, type(e).__name__)
