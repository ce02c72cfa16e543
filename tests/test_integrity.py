"""Payloads that prove themselves (issue 10): sizes and checksums recorded by the workers,
checked by every read, by ``open_results(..., verify=True)`` and by ``resume=True``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import dask
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap, open_payload, open_results
from acme_xr.errors import ComputeError, MissingPayloadError, PayloadCorruptError
from acme_xr.manifest import Manifest
from acme_xr.storage.checksums import checksum, file_sums

N = 6


def wave(i: int, log: str | None = None) -> Any:
    if log is not None:  # which calls ran (appends are atomic for lines this short)
        with open(log, "a") as fh:
            fh.write(f"{i}\n")
    return np.arange(8.0) + i, np.int64(i)


def ran(log: str) -> list[int]:
    with open(log) as fh:
        return sorted(int(line) for line in fh)


def expected_result_0() -> np.ndarray:
    return np.stack([np.arange(8.0) + i for i in range(N)])


def make_run(out: str, **kw: Any) -> None:
    ParallelMap(wave, list(range(N)), output_dir=out, verbose=False, **kw).compute()


def manifest(out: str) -> dict[str, Any]:
    with open(os.path.join(out, "manifest.json")) as fh:
        return json.load(fh)  # type: ignore[no-any-return]


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


# -- what is recorded ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", [{}, {"write_pickle": True}])
def test_the_manifest_records_each_payloads_size_and_checksums(client: Any, tmp_path: Any,
                                                               mode: dict[str, Any]) -> None:
    out = str(tmp_path / "run")
    make_run(out, **mode)
    m = manifest(out)
    assert m["format_version"] == 4
    assert m["payload_format"] == 2 and m["checksum"] == "crc32c"
    run = Manifest.read(out)
    ext = "pickle" if mode else "h5"
    for i in range(N):
        path = os.path.join(out, f"wave_{i}.{ext}")
        assert run.sums(i) == file_sums(path)
    if mode:
        return
    for name in ("result_0", "result_1"):
        for i in range(N):
            offset, length, crc = run.variables[name].span(i)  # type: ignore[misc]
            with h5py.File(os.path.join(out, f"wave_{i}.h5")) as fh:
                assert fh[name].id.get_offset() == offset
                assert length == fh[name].nbytes
            with open(os.path.join(out, f"wave_{i}.h5"), "rb") as fh:
                raw = fh.read()
            assert checksum(raw[offset:offset + length]) == crc
            assert raw[offset:offset + length] == np.asarray(wave(i)[int(name[-1])]).tobytes()


def test_checksums_can_be_switched_off(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    with dask.config.set({"acme_xr.payload.checksums": False}):
        make_run(out)
    assert manifest(out)["checksum"] is None
    # no checksums; sizes and data spans stay (the byte-range reader needs them)
    m = Manifest.read(out)
    assert (m.checksum == -1).all() and (m.size > 0).all()
    spans = m.variables["result_0"].spans
    assert spans is not None and (spans[:, 2] == -1).all() and (spans[:, 1] > 0).all()
    np.testing.assert_array_equal(open_results(out).result_0.values, expected_result_0())


def test_a_manifest_of_a_newer_format_is_refused_naming_the_fix(tmp_path: Any) -> None:
    Manifest.new(1, {"func": {"name": "f"}}).write(str(tmp_path))
    m = manifest(str(tmp_path))
    m["format_version"] = 99
    with open(tmp_path / "manifest.json", "w") as fh:
        json.dump(m, fh)
    from acme_xr.errors import ResultsLayoutError

    with pytest.raises(ResultsLayoutError, match="format_version 99.*upgrade acme_xr"):
        Manifest.read(str(tmp_path))


# -- issue 10, point 4: emptied and truncated payloads ---------------------------------------

def test_point_4_emptied_and_truncated_payloads_are_named_and_resume_reruns_them(
        client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    log = str(tmp_path / "calls.log")
    ParallelMap(wave, list(range(N)), log=log, output_dir=out, verbose=False).compute()
    assert ran(log) == list(range(N))
    open(os.path.join(out, "wave_1.h5"), "wb").close()  # emptied to 0 bytes
    with open(os.path.join(out, "wave_4.h5"), "r+b") as fh:  # truncated
        fh.truncate(os.path.getsize(os.path.join(out, "wave_4.h5")) // 2)

    ds = open_results(out)
    with pytest.raises(PayloadCorruptError, match=r"call 1: \S*wave_1\.h5: 0 bytes.*emptied"):
        ds.result_0.load()
    with pytest.raises(PayloadCorruptError, match=r"call 4: \S*wave_4\.h5: .*truncated") as err:
        ds.result_1.isel(call=4).load()
    assert err.value.bad[4][0] == os.path.join(out, "wave_4.h5")
    assert type(err.value) is PayloadCorruptError and isinstance(err.value, OSError)
    good = open_results(out, chunks=None).result_0.isel(call=[0, 2, 3, 5]).values
    np.testing.assert_array_equal(good, expected_result_0()[[0, 2, 3, 5]])  # still read

    with pytest.raises(PayloadCorruptError) as err:
        open_results(out, verify=True)  # every bad payload, up front
    assert sorted(err.value.bad) == [1, 4]
    assert "wave_1.h5" in str(err.value) and "wave_4.h5" in str(err.value)

    os.remove(log)
    ParallelMap(wave, list(range(N)), log=log, output_dir=out, verbose=False,
                resume=True).compute()
    assert ran(log) == [1, 4]  # exactly those two ran again
    ds = open_results(out, verify=True)
    np.testing.assert_array_equal(ds.result_0.values, expected_result_0())
    assert ds.result_1.values.tolist() == list(range(N))
    assert sorted(f for f in os.listdir(out) if f.endswith(".corrupt")) == [
        "wave_1.h5.corrupt", "wave_4.h5.corrupt"]  # kept aside, never read


def test_resume_reruns_a_changed_pickle_payload(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    log = str(tmp_path / "calls.log")
    ParallelMap(wave, list(range(N)), log=log, output_dir=out, verbose=False,
                write_pickle=True).compute()
    flip(os.path.join(out, "wave_2.pickle"), 10)
    with pytest.raises(PayloadCorruptError, match=r"call 2: \S*wave_2\.pickle: checksum"):
        open_results(out, verify=True)
    os.remove(log)
    ParallelMap(wave, list(range(N)), log=log, output_dir=out, verbose=False,
                write_pickle=True, resume=True).compute()
    assert ran(log) == [2]


def test_a_missing_payload_is_a_payload_corrupt_error_too(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    make_run(out)
    os.remove(os.path.join(out, "wave_3.h5"))
    with pytest.raises(MissingPayloadError, match=r"call 3.*wave_3\.h5"):
        open_results(out).result_0.load()
    with pytest.raises(PayloadCorruptError, match=r"call 3: \S*wave_3\.h5: missing"):
        open_results(out, verify=True)


def test_a_damaged_payload_of_a_run_without_checksums_names_file_and_call(
        client: Any, tmp_path: Any) -> None:
    # with checksums off the size is still recorded and compared
    out = str(tmp_path / "run")
    with dask.config.set({"acme_xr.payload.checksums": False}):
        make_run(out)
    open(os.path.join(out, "wave_2.h5"), "wb").close()
    with pytest.raises(PayloadCorruptError, match=r"call 2: \S*wave_2\.h5: 0 bytes.*emptied"):
        open_results(out).result_0.load()
    # runs written before checksums (no size recorded): HDF5's own error, with file and call
    run = Manifest.read(out)
    run.forget_sums(2)
    run.write(out)
    with pytest.raises(PayloadCorruptError, match=r"call 2: \S*wave_2\.h5: HDF5 cannot read"):
        open_results(out).result_0.load()


# -- one flipped byte in any region ----------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A finished run (in this process: compute(debug=True)), copied by each test."""
    out = str(tmp_path_factory.mktemp("pristine") / "run")
    with dask.config.set({"acme_xr.progress.delay": "1h"}):
        ParallelMap(wave, list(range(3)), output_dir=out, verbose=False).compute(debug=True)
    yield out


def _regions(path: str, run: Manifest) -> dict[str, list[int]]:
    """Byte offsets in each region of payload 1, found from the file itself."""
    start, length, _crc = run.variables["result_0"].span(1)  # type: ignore[misc]
    with h5py.File(path, "r") as fh:
        header = h5py.h5o.get_info(fh["result_0"].id).addr  # the dataset's object header
        root = h5py.h5o.get_info(fh.id).addr
    return {
        "superblock": [0, 8, 20],
        "object header": [header + 8, root + 8],
        "data": [start, start + length // 2, start + length - 1],
    }


@pytest.mark.parametrize("region,k", [(r, k) for r in ("superblock", "object header", "data")
                                      for k in range(3)
                                      if not (r == "object header" and k == 2)])
def test_one_flipped_byte_in_any_region_is_caught(pristine: str, tmp_path: Any, region: str,
                                                  k: int) -> None:
    out = str(tmp_path / "run")
    shutil.copytree(pristine, out)
    path = os.path.join(out, "wave_1.h5")
    offset = _regions(path, Manifest.read(out))[region][k]
    flip(path, offset)
    with pytest.raises(PayloadCorruptError, match=r"call 1: \S*wave_1\.h5") as err:
        open_results(out, verify=True)
    assert list(err.value.bad) == [1]
    if region == "data":  # a plain read checks the data bytes it reads
        with pytest.raises(PayloadCorruptError, match=r"call 1: \S*wave_1\.h5: the data of "
                                                      r"'result_0'.*changed"):
            open_results(out).compute()


@pytest.mark.parametrize("damage", ["emptied", "truncated", "superblock", "object header",
                                    "data"])
@pytest.mark.parametrize("beside", [True, False], ids=["in its run", "alone"])
def test_open_payload_names_a_damaged_payload(pristine: str, tmp_path: Any, damage: str,
                                              beside: bool) -> None:
    """open_payload raises PayloadCorruptError for a damaged payload (a reviewer saw
    ResultsLayoutError, a bare h5py KeyError, and changed data returned silently); in its
    run directory it also compares the file with its recorded size and CRC-32C."""
    out = str(tmp_path / "run")
    shutil.copytree(pristine, out)
    path = os.path.join(out, "wave_1.h5")
    regions = _regions(path, Manifest.read(out))
    if damage == "emptied":
        open(path, "wb").close()
    elif damage == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    else:
        # past the signature: a file whose first bytes are not HDF5's is, alone, a foreign
        # file (ResultsLayoutError); in its run its checksum names it damaged
        flip(path, regions[damage][1 if damage in ("data", "superblock") else 0])
    if not beside:
        os.remove(os.path.join(out, "manifest.json"))
        if damage == "data":  # HDF5 alone cannot know the data changed
            open_payload(path)
            return
    with pytest.raises(PayloadCorruptError, match=r"wave_1\.h5"):
        open_payload(path)
    # the intact payloads still open
    assert open_payload(os.path.join(out, "wave_0.h5")).result_0.shape == (
        expected_result_0().shape[1:])


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True))
def test_verify_catches_a_flipped_byte_anywhere(pristine: str, where: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        shutil.copytree(pristine, out)
        path = os.path.join(out, "wave_2.h5")
        offset = int(where * os.path.getsize(path))
        flip(path, offset)
        with pytest.raises(PayloadCorruptError) as err:
            open_results(out, verify=True)
        assert list(err.value.bad) == [2], offset


# -- issue 10, point 6: only NotStorable falls back to pickle ------------------------------

class _Broken:
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("conversion bug in user code")


def broken(i: int) -> Any:
    return [_Broken()] if i == 1 else np.float64(i)


def test_a_type_error_while_storing_fails_the_call_with_its_traceback(client: Any,
                                                                     tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    with pytest.raises(ComputeError) as err:
        ParallelMap(broken, [0, 1, 2], output_dir=out, verbose=False).compute()
    assert list(err.value.failed) == [1]
    failure = err.value.failed[1]
    assert failure["type"] == "TypeError" and "conversion bug" in failure["message"]
    assert "__array__" in failure["traceback"]
    assert not os.path.exists(os.path.join(out, "broken_1.pickle"))


def test_zarr_chunks_carry_checksums_that_reads_and_verify_check(client: Any,
                                                                tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    make_run(out, storage="zarr")
    ds = open_results(out, verify=True)
    np.testing.assert_array_equal(ds.result_0.values, expected_result_0())
    chunk = os.path.join(out, "wave.zarr", "result_0", "c", "3", "0")  # call 3's chunk
    flip(chunk, os.path.getsize(chunk) // 2)
    with pytest.raises(PayloadCorruptError, match=r"call 3: \S*wave\.zarr\S*: the chunk of "
                                                  r"'result_0' is damaged"):
        open_results(out).result_0.load()
    with pytest.raises(PayloadCorruptError) as err:
        open_results(out, verify=True)
    assert list(err.value.bad) == [3]


@pytest.mark.parametrize("mode", ["hdf5", "single_file", "zarr"])
def test_runs_in_manifest_format_1_open_and_verify(tmp_path: Any, mode: str) -> None:
    # tests/data/runs/payload-v1: manifest format_version 1 (no sizes or checksums)
    run = str(tmp_path / mode)
    shutil.copytree(os.path.join(os.path.dirname(__file__), "data", "runs", "payload-v1", mode),
                    run)
    assert manifest(run)["format_version"] == 1
    ds = open_results(run, verify=True).load()
    assert ds.status.values.tolist() == ["done", "done", "failed", "done"]
    assert ds.result_1.values[[0, 1, 3]].tolist() == [0, 10, 30]
    if mode == "hdf5":  # nothing recorded to compare: a damaged payload is still named
        open(os.path.join(run, "legacy_1.h5"), "wb").close()
        with pytest.raises(PayloadCorruptError, match=r"call 1: \S*legacy_1\.h5: HDF5"):
            open_results(run).result_1.load()
        os.remove(os.path.join(run, "legacy_1.h5"))
        with pytest.raises(PayloadCorruptError, match=r"call 1: \S*legacy_1\.h5: missing"):
            open_results(run, verify=True)


def test_verify_checks_a_single_file_container_as_a_whole(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    make_run(out, single_file=True)
    assert manifest(out)["container_sums"] == list(file_sums(os.path.join(out, "wave.h5")))
    open_results(out, verify=True)
    flip(os.path.join(out, "wave.h5"), 100)
    with pytest.raises(PayloadCorruptError, match=r"wave\.h5: checksum") as err:
        open_results(out, verify=True)
    assert sorted(err.value.bad) == list(range(N))


def test_the_manifest_keeps_sums_compactly_and_reads_them_back(tmp_path: Any) -> None:
    from acme_xr.storage.checksums import Sums

    n = 2000
    m = Manifest.new(n, {"func": {"name": "f"}})
    meta = (("result_0", (), "<i8", (), None, None),)
    for i in range(n):
        if i % 7:  # every 7th call without a payload of its own
            m.record_done(i, "h5", meta, None, Sums(2056, 2**32 - 1 - i, ((2048, 8, i),)))
    m.write(str(tmp_path))
    # two CRC-32Cs (4 bytes each) a call and little else: sizes and offsets agree
    assert os.path.getsize(tmp_path / "manifest.calls") < 40 * n
    back = Manifest.read(str(tmp_path))
    for i in (0, 1, 6, 7, n - 1):
        assert back.sums(i) == (None if i % 7 == 0 else (2056, 2**32 - 1 - i))
        assert back.variables["result_0"].span(i) == (None if i % 7 == 0 else (2048, 8, i))


def test_verify_without_checksums_says_it_checks_sizes_only(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    with dask.config.set({"acme_xr.payload.checksums": False}):
        make_run(out)
    with pytest.warns(UserWarning, match="recorded no checksums.*verify checks sizes only") as w:
        open_results(out, verify=True)
    assert len([x for x in w if "recorded no checksums" in str(x.message)]) == 1  # once
    checked = str(tmp_path / "checked")
    make_run(checked)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*recorded no checksums")
        open_results(checked, verify=True)
