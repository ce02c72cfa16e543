"""Quickstart: one call per channel, every call's results on disk, one Dataset to read them."""

import numpy as np

from acme_xr import ParallelMap, open_results


def spectrum(data, channel):
    power = np.abs(np.fft.rfft(data[channel])) ** 2
    return power, int(power.argmax())  # two return values: result_0, result_1


if __name__ == "__main__":  # dask starts worker processes that import this file
    data = np.random.default_rng(0).standard_normal((8, 1000))  # 8 channels x 1000 samples
    # data goes whole to every call; channel=range(8) is split: call i gets channel i
    with ParallelMap(spectrum, data, channel=range(8), output_dir="run1", n_workers=2) as pmap:
        files = pmap.compute()  # run1/spectrum_0.h5 ... run1/spectrum_7.h5
    print(files[0])

    ds = open_results("run1")  # lazy: nothing but run1/manifest.json is read yet
    print(ds)
    print("mean power spectrum:", ds.result_0.mean("call").values[:4])
    print("peak bin per channel:", ds.result_1.values)
    assert (ds.channel.values == np.arange(8)).all()
    assert (ds.status.values == "done").all()
