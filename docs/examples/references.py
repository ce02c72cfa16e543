"""A run that any xarray user opens without acme_xr: references to the payloads' bytes."""

import xarray as xr

from acme_xr import ParallelMap, open_results, write_references


def scaled(x):
    return x * 1.5


if __name__ == "__main__":
    ParallelMap(scaled, [1, 2, 3], output_dir="run1", n_workers=2).compute()
    refs = write_references("run1", "run1.json")  # or .parq, .icechunk; `acme-xr export`

    # what a colleague without acme_xr runs (kerchunk is the only extra they need):
    ds = xr.open_dataset(refs, engine="kerchunk")
    print(ds)
    xr.testing.assert_identical(ds, open_results("run1").load())
