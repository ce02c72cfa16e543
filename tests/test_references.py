"""write_references / acme-xr export: a run as kerchunk or icechunk references that plain
xarray opens, in a process without acme_xr, to what open_results gives."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from acme_xr import ParallelMap, open_results, write_references
from acme_xr.cli import main
from acme_xr.errors import ComputeError, InputError, ReferencesExistError, ResultsLayoutError
from acme_xr.manifest import Manifest

ACME_RUN = Path(__file__).parent / "data" / "runs" / "acme-2026.6.2" / "run"
SUFFIXES = {"json": ".json", "parquet": ".parq", "icechunk": ".icechunk"}

# Run in a fresh interpreter that cannot import acme_xr. The shared environment has acme_xr
# installed, and xarray loads every installed backend entry point (acme_xr's too) when it
# looks an engine up; refusing the import is what a machine without acme_xr does.
READER = textwrap.dedent("""
    import os, pickle, sys

    class _NoAcmeXr:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "acme_xr":
                raise ImportError("acme_xr is not installed here")
            return None

    sys.meta_path.insert(0, _NoAcmeXr())
    import warnings
    warnings.simplefilter("ignore")
    import xarray as xr

    refs, run, out = sys.argv[1:4]
    if refs.endswith(".icechunk"):
        import icechunk

        prefix = "file://" + os.path.abspath(run).rstrip("/") + "/"
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(refs),
                                        authorize_virtual_chunk_access={prefix: None})
        ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False, chunks=None)
    else:
        ds = xr.open_dataset(refs, engine="kerchunk")
    ds = ds.load()
    assert "acme_xr" not in sys.modules, "acme_xr was imported"
    with open(out, "wb") as fh:
        pickle.dump(ds, fh)
""")


def opened_plainly(refs: str, run: str, tmp: Path) -> xr.Dataset:
    """The references opened by plain xarray in a subprocess without acme_xr."""
    out = tmp / "plain.pickle"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", READER, refs, run, str(out)], check=True,
                   cwd=tmp, env=env, timeout=300)
    with open(out, "rb") as fh:
        return pickle.load(fh)  # type: ignore[no-any-return]


def assert_same(plain: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical, and every variable with the same dtype (assert_identical compares values
    only: 1 and 1.0 are equal to it)."""
    expected = expected.load()
    xr.testing.assert_identical(plain, expected)
    for name, var in expected.variables.items():
        assert plain[name].dtype == var.dtype, (name, plain[name].dtype, var.dtype)


def ints(x: int) -> tuple[np.ndarray, float]:
    if x == 2:
        raise ValueError("call 2 fails on purpose")
    return np.arange(3, dtype=np.int32) * x - 5, x * 0.5


def labelled(channel: int) -> xr.DataArray:
    return xr.DataArray(np.arange(3.0) * channel, dims=("freq",),
                        coords={"freq": [1.0, 2.0, 4.0], "start": channel * 10.0},
                        attrs={"units": "V"})


def ragged(x: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(x + 1.0), np.full(2, x)


def kinds(x: int) -> tuple[Any, ...]:
    if x == 1:
        raise ValueError("call 1 fails on purpose")
    return (np.array([x + 1j, 2j]), x > 1, "s" * (x + 1), np.uint16(x),
            np.ma.masked_array([1.0, x], mask=[0, 1]))


def promoted(x: int) -> np.ndarray:
    return np.arange(2, dtype=np.int32 if x == 1 else np.int64) + 2**40 * (x != 1)


def floats(x: int) -> np.ndarray:
    if x in (1, 3):
        raise ValueError("odd calls fail")
    return np.full((2, 2), x, np.float32)


def compute(func: Any, *args: Any, output_dir: Path, **kwargs: Any) -> str:
    try:
        ParallelMap(func, *args, output_dir=str(output_dir), verbose=False, **kwargs).compute()
    except ComputeError:
        pass  # the failed calls are part of the run under test
    return str(output_dir)


@pytest.fixture(scope="module")
def int_run(tmp_path_factory: Any, _session_client: Any) -> str:
    with _session_client.as_current():
        return compute(ints, [0, 1, 2, 3], output_dir=tmp_path_factory.mktemp("ints") / "run")


def _acme_run(tmp: Path) -> str:
    run = tmp / "acme"
    shutil.copytree(ACME_RUN, run)  # open_results caches a rebuilt manifest in the run
    return str(run)


def _moved_run(tmp: Path, int_run: str) -> str:
    shutil.copytree(int_run, tmp / "before")
    shutil.move(str(tmp / "before"), str(tmp / "after"))
    return str(tmp / "after")


@pytest.mark.parametrize("fmt", sorted(SUFFIXES))
@pytest.mark.parametrize("kind", ["failed_integers", "moved", "acme"])
def test_references_open_in_plain_xarray_as_open_results(
        kind: str, fmt: str, int_run: str, tmp_path: Path) -> None:
    if kind == "failed_integers":
        run = int_run
    elif kind == "moved":
        run = _moved_run(tmp_path, int_run)
    else:
        run = _acme_run(tmp_path)
    expected = open_results(run)
    refs = write_references(run, tmp_path / f"refs{SUFFIXES[fmt]}")
    plain = opened_plainly(refs, run, tmp_path)
    assert_same(plain, expected)
    assert plain.status.values.tolist().count("done") == 3
    if kind != "acme":  # the failed call's integers are no value, and are named so
        assert plain.result_0_mask[2].all() and not plain.result_0_mask[[0, 1, 3]].any()
        assert plain.result_1.isnull().values.tolist() == [False, False, True, False]


def test_acme_run_references_point_into_its_payloads(tmp_path: Path) -> None:
    run = _acme_run(tmp_path)
    refs = write_references(run, tmp_path / "acme.json")
    text = Path(refs).read_text()
    assert os.path.join(run, "f_payload", "f_1.h5") in text


def test_references_read_the_payload_bytes_not_a_copy(int_run: str, tmp_path: Path) -> None:
    run = _moved_run(tmp_path, int_run)
    refs = write_references(run, tmp_path / "refs.json")
    rec = Manifest.read(run).variables["result_0"]
    offset, length, _ = rec.span(1)  # call 1: [-5, -4, -3] as int32
    path = os.path.join(run, "ints_1.h5")
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.int32(1234).tobytes())
    ds = xr.open_dataset(refs, engine="kerchunk")
    assert ds.result_0[1].values.tolist() == [1234, -4, -3]


def test_recorded_ranges_are_used_without_opening_a_payload(int_run: str,
                                                             tmp_path: Path) -> None:
    # with the HDF5 signature of every payload wiped, h5py cannot open one: the references
    # must come from the manifest's ranges alone (and still read the data bytes)
    run = _moved_run(tmp_path, int_run)
    for i in (0, 1, 3):
        with open(os.path.join(run, f"ints_{i}.h5"), "r+b") as fh:
            fh.write(b"\0" * 8)
    refs = write_references(run, tmp_path / "refs.json")
    ds = xr.open_dataset(refs, engine="kerchunk")
    assert ds.result_0[[0, 1, 3]].values.tolist() == [[-5, -5, -5], [-5, -4, -3], [-5, -2, 1]]
    assert ds.result_1.values[[0, 1, 3]].tolist() == [0.0, 0.5, 1.5]


@pytest.mark.parametrize("kind", ["hdf5", "single_file", "zarr"])
def test_older_runs_and_other_storage_layouts(kind: str, tmp_path: Path) -> None:
    run = tmp_path / kind
    shutil.copytree(Path(__file__).parent / "data" / "runs" / "payload-v1" / kind, run)
    expected = open_results(run)
    refs = write_references(run, tmp_path / "refs.json")
    assert_same(xr.open_dataset(refs, engine="kerchunk"), expected)
    if kind != "zarr":  # zarr chunks are compressed: copied; HDF5 data is referenced
        assert str(run) in Path(refs).read_text()


def test_floats_gaps_read_nan_and_keep_their_dtype(client: Any, tmp_path: Path) -> None:
    run = compute(floats, [0, 1, 2, 3], output_dir=tmp_path / "run")
    expected = open_results(run)
    for fmt, suffix in SUFFIXES.items():
        refs = write_references(run, tmp_path / f"refs{suffix}")
        if fmt == "icechunk":
            continue  # opened in a subprocess by the test above; same writer
        ds = xr.open_dataset(refs, engine="kerchunk")
        assert ds.result_0.dtype == np.float32
        assert np.isnan(ds.result_0.values[[1, 3]]).all()
        assert_same(ds, expected)
        assert "result_0_mask" not in ds


@pytest.mark.parametrize("fmt", ["json", "icechunk"])
def test_results_that_are_not_plain_numbers_are_copied_equal(client: Any, tmp_path: Path,
                                                             fmt: str) -> None:
    # complex and uint16 are referenced; bool, str and a masked array are copied in
    run = compute(kinds, [0, 1, 2], output_dir=tmp_path / "run")
    expected = open_results(run)
    refs = write_references(run, tmp_path / f"refs{SUFFIXES[fmt]}")
    if fmt == "json":
        ds = xr.open_dataset(refs, engine="kerchunk")
    else:
        import icechunk

        repo = icechunk.Repository.open(
            icechunk.local_filesystem_storage(refs),
            authorize_virtual_chunk_access={"file://" + run + "/": None})
        ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False, chunks=None)
    assert_same(ds, expected)
    assert ds.result_3.values.tolist() == [0, 0, 2] and ds.result_3_mask.values.tolist() == [
        False, True, False]
    assert ds.result_4_mask.values.tolist() == [[False, True], [True, True], [False, True]]


def test_a_call_whose_dtype_was_promoted_is_copied_not_referenced(client: Any,
                                                                   tmp_path: Path) -> None:
    # call 1's int32 bytes are not int64 values: pointing at them would read garbage
    run = compute(promoted, [0, 1, 2], output_dir=tmp_path / "run")
    expected = open_results(run)
    assert expected.result_0.dtype == np.int64
    refs = write_references(run, tmp_path / "refs.json")
    body = json.loads(Path(refs).read_text())["refs"]
    assert body["result_0/1.0"].startswith("base64:")
    assert body["result_0/0.0"][0].endswith("promoted_0.h5")
    assert_same(xr.open_dataset(refs, engine="kerchunk"), expected)


def test_coordinates_and_labels_of_xarray_returns(client: Any, tmp_path: Path) -> None:
    run = compute(labelled, channel=range(4), output_dir=tmp_path / "run")
    expected = open_results(run)
    assert "channel" in expected.coords and "start" in expected.coords
    refs = write_references(run, tmp_path / "refs.json")
    ds = xr.open_dataset(refs, engine="kerchunk")
    assert_same(ds, expected)
    assert ds.result_0.dims == ("call", "freq") and ds.result_0.attrs == {"units": "V"}
    assert ds.freq.values.tolist() == [1.0, 2.0, 4.0]
    assert ds.channel.values.tolist() == [0, 1, 2, 3]
    assert ds.start.values.tolist() == [0.0, 10.0, 20.0, 30.0]


def test_ragged_results_are_left_out_and_named(client: Any, tmp_path: Path) -> None:
    run = compute(ragged, [0, 1, 1], output_dir=tmp_path / "run")
    with pytest.warns(UserWarning, match=r"'result_0'.*calls \[1, 2\] have shape \(2,\)"):
        refs = write_references(run, tmp_path / "refs.json")
    ds = xr.open_dataset(refs, engine="kerchunk")
    assert "result_0" not in ds and "result_0_shape" not in ds
    expected = open_results(run).drop_vars(["result_0", "result_0_shape"])
    left = ds.attrs.pop("acme_xr_left_out")
    assert '"result_0"' in left and "[0]" in left
    assert_same(ds, expected)


@pytest.mark.parametrize(("name", "fmt", "why"), [
    ("refs.txt", None, "cannot tell the references format"),
    ("refs.json", "netcdf", "format='netcdf' is not known"),
])
def test_bad_format_is_an_input_error_before_writing(int_run: str, tmp_path: Path, name: str,
                                                     fmt: str | None, why: str) -> None:
    with pytest.raises(InputError, match=why):
        write_references(int_run, tmp_path / name, format=fmt)
    assert not (tmp_path / name).exists()


def test_existing_output_and_no_run_are_refused(int_run: str, tmp_path: Path) -> None:
    (tmp_path / "refs.json").write_text("mine")
    with pytest.raises(ReferencesExistError, match="refs.json exists"):
        write_references(int_run, tmp_path / "refs.json")
    assert (tmp_path / "refs.json").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsLayoutError, match="holds no acme_xr or ACME run"):
        write_references(tmp_path / "empty", tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_format_keyword_wins_over_the_suffix(int_run: str, tmp_path: Path) -> None:
    out = write_references(int_run, tmp_path / "refs.data", format="json")
    assert xr.open_dataset(out, engine="kerchunk").result_0.shape == (4, 3)


# -- the command ------------------------------------------------------------------------
def test_export_command_writes_each_format(int_run: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", int_run, str(tmp_path / "a.json")]) == 0
    assert main(["export", int_run, str(tmp_path / "b.refs"), "--format", "parquet"]) == 0
    assert str(tmp_path / "a.json") in capsys.readouterr().out
    for name in ("a.json", "b.refs"):
        ds = xr.open_dataset(str(tmp_path / name), engine="kerchunk")
        assert ds.result_0[3].values.tolist() == [-5, -2, 1]


@pytest.mark.parametrize(("args", "message"), [
    (["{run}", "{tmp}/refs.txt"], "cannot tell the references format"),
    (["{run}", "{tmp}/refs.json", "--format", "netcdf"], "format='netcdf' is not known"),
    (["{run}", "{tmp}/no/such/dir/refs.json"], "No such file or directory"),
    (["{tmp}/nowhere", "{tmp}/refs.json"], "does not exist"),
    (["{run}", "{tmp}/exists.json"], "exists"),
])
def test_export_command_bad_input_is_one_line_and_nonzero(
        int_run: str, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "exists.json").write_text("")
    argv = [a.format(run=int_run, tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "acme_xr", "export", *argv],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err

    assert not (tmp_path / "refs.json").exists() and not (tmp_path / "refs.txt").exists()


def empty(x: int) -> tuple[np.ndarray, np.ndarray, np.int8]:
    if x == 2:
        raise ValueError("call 2 fails on purpose")
    return np.zeros(0), np.zeros((0, 3), np.int32), np.int8(x)


@pytest.mark.parametrize("fmt", sorted(SUFFIXES))
def test_empty_results_are_exported(client: Any, tmp_path: Path, fmt: str) -> None:
    """np.zeros(0) and shape (0, 3) results: no chunks to point at, but the arrays are
    there with their shapes and dtypes (kerchunk parquet divided by a chunk length of 0;
    icechunk refused it as an invalid chunk grid)."""
    run = compute(empty, [0, 1, 2], output_dir=tmp_path / "run")
    refs = write_references(run, tmp_path / f"refs{SUFFIXES[fmt]}")
    plain = opened_plainly(refs, run, tmp_path)
    assert plain.result_1.shape == (3, 0, 3)
    assert_same(plain, open_results(run))


@pytest.mark.parametrize("fmt", sorted(SUFFIXES))
def test_export_command_prints_only_the_path(int_run: str, tmp_path: Path, fmt: str) -> None:
    """``out=$(acme-xr export ...)`` is the path: icechunk's Rust log wrote a WARN line to
    stdout; zarr's dtype warning and pandas' fastparquet deprecations went to stderr."""
    out = str(tmp_path / f"refs{SUFFIXES[fmt]}")
    env = {k: v for k, v in os.environ.items() if k != "ICECHUNK_LOG"}
    env["PYTHONWARNINGS"] = "default"  # what would be shown, DeprecationWarnings included
    proc = subprocess.run([sys.executable, "-m", "acme_xr", "export", int_run, out],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == out + "\n"
    for noise in ("Zarr V3 specification", "fastparquet", "infer_string", "WARN"):
        assert noise not in proc.stderr, proc.stderr
