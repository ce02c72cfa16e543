"""Resume: finish a run in its own directory, running only the calls without a valid payload.

The Ctrl-C-then-resume case is in ``test_faults_interrupt.py``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import h5py
import numpy as np
import pytest

from acme_xr import ParallelMap
from acme_xr.errors import ComputeError, ResumeMismatchError, RunExistsError
from acme_xr.manifest import Manifest
from acme_xr.storage.hdf5 import read_payload

from .conftest import listing


def executions(marker_dir: str) -> list[int]:
    if not os.path.isdir(marker_dir):
        return []
    return [int(n.split(".")[0]) for n in os.listdir(marker_dir)]


def flaky(i: int, gain: float, flags: str, markers: str) -> tuple[np.ndarray, str]:
    """Fails while ``flags/<i>`` exists (a missing input file, say); records each run."""
    os.makedirs(markers, exist_ok=True)
    open(os.path.join(markers, f"{i}.{os.getpid()}.{time.perf_counter_ns()}"), "w").close()
    if os.path.exists(os.path.join(flags, str(i))):
        raise FileNotFoundError(f"input {i} is not there yet")
    return np.arange(4.0) * gain + i, f"call {i}"


def set_flags(flags: Any, calls: list[int]) -> str:
    os.makedirs(flags, exist_ok=True)
    for i in calls:
        (flags / str(i)).write_text("")
    return str(flags)


def test_resume_runs_only_the_calls_without_a_valid_payload(client: Any, tmp_path: Any) -> None:
    out, flags, markers = tmp_path / "run", tmp_path / "flags", str(tmp_path / "m")
    args = (list(range(10)), 1.5, set_flags(flags, [2, 5]), markers)
    with pytest.raises(ComputeError, match="2 of 10 calls failed"):
        ParallelMap(flaky, *args, output_dir=str(out)).compute()
    # meanwhile: one payload is lost, one call finished without reaching the manifest
    os.unlink(out / "flaky_7.h5")
    run = Manifest.read(str(out))
    run.forget(8)
    run.write(str(out))
    for name in os.listdir(flags):
        os.unlink(flags / name)
    os.rename(markers, markers + "-first")

    files = ParallelMap(flaky, *args, output_dir=str(out), resume=True).compute()
    assert sorted(executions(markers)) == [2, 5, 7]  # call 8's payload was adopted as it is
    run = Manifest.read(str(out))
    assert run.state == "complete" and run.counts["done"] == 10 and run.errors == {}
    clean = ParallelMap(flaky, list(range(10)), 1.5, str(flags), str(tmp_path / "m2"),
                        output_dir=str(tmp_path / "clean")).compute()
    for got, want in zip(files, clean, strict=True):
        a, b = read_payload(got), read_payload(want)
        assert list(a) == list(b)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    with h5py.File(out / "flaky.h5") as fh:
        assert sorted(fh) == sorted(f"comp_{i}" for i in range(10))


def test_resuming_a_complete_run_runs_nothing(client: Any, tmp_path: Any) -> None:
    out, markers = tmp_path / "run", str(tmp_path / "m")
    args = ([1, 2, 3], 2.0, str(tmp_path / "no-flags"), markers)
    first = ParallelMap(flaky, *args, output_dir=str(out)).compute()
    again = ParallelMap(flaky, *args, output_dir=str(out), resume=True).compute()
    assert again == first and sorted(executions(markers)) == [1, 2, 3]  # once each


def stacked(i: int, flags: str) -> tuple[np.ndarray, float]:
    if os.path.exists(os.path.join(flags, str(i))):
        raise RuntimeError("not yet")
    return np.arange(3.0) + 10 * i, i / 2


def test_resume_a_single_file_run(client: Any, tmp_path: Any) -> None:
    """Calls already merged into <func>.h5 by the first compute stay there."""
    out, flags = tmp_path / "run", tmp_path / "flags"
    opts = dict(single_file=True, result_shape=(None, 3), output_dir=str(out))
    with pytest.raises(ComputeError):
        ParallelMap(stacked, list(range(5)), set_flags(flags, [1, 3]), **opts).compute()
    for name in os.listdir(flags):
        os.unlink(flags / name)
    ParallelMap(stacked, list(range(5)), str(flags), resume=True, **opts).compute()
    with h5py.File(out / "stacked.h5") as fh:
        np.testing.assert_array_equal(fh["result_0"][()],
                                      [np.arange(3.0) + 10 * i for i in range(5)])
        assert [fh[f"comp_{i}/result_1"][()] for i in range(5)] == [i / 2 for i in range(5)]
    assert sorted(os.listdir(out)) == ["acme_xr_call.pkl", "manifest.calls", "manifest.json",
                                       "stacked.h5", "stacked.log"]


def other(i: int, gain: float, flags: str, markers: str) -> tuple[np.ndarray, str]:
    return np.zeros(4), "other"


@pytest.mark.parametrize("change, what", [
    ({"func": other}, "the function differs"),
    ({"gain": 2.5}, "the inputs differ"),
    ({"calls": list(range(11))}, "the inputs differ; the number of calls differs"),
    ({"write_pickle": True}, "storage differs"),
    ({"result_shape": (None, 4)}, "result_shape differs"),
])
def test_resume_refuses_a_different_run(client: Any, tmp_path: Any, change: dict[str, Any],
                                         what: str) -> None:
    out, flags, markers = tmp_path / "run", str(tmp_path / "f"), str(tmp_path / "m")
    ParallelMap(flaky, list(range(10)), 1.5, flags, markers, output_dir=str(out)).compute()
    before = {p: os.path.getmtime(out / p) for p in os.listdir(out)}
    kw = {k: v for k, v in change.items() if k not in ("func", "gain", "calls")}
    with pytest.raises(ResumeMismatchError, match=f"cannot resume {out}: {what}") as info:
        ParallelMap(change.get("func", flaky), change.get("calls", list(range(10))),
                    change.get("gain", 1.5), flags, markers, output_dir=str(out), resume=True,
                    **kw).compute()
    assert isinstance(info.value, ValueError)
    assert {p: os.path.getmtime(out / p) for p in os.listdir(out)} == before


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path: Any) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ResumeMismatchError, match="no manifest.json"):
        ParallelMap(stacked, [1, 2], "x", output_dir=str(tmp_path / "run"), resume=True).compute()
    assert listing(tmp_path / "run") == ["notes.txt"]


def test_reusing_a_run_directory_without_resume_is_refused(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "run"
    ParallelMap(stacked, [1, 2], "x", output_dir=str(out)).compute()
    with pytest.raises(RunExistsError, match="already holds .* resume=True") as info:
        ParallelMap(stacked, [1, 2], "x", output_dir=str(out)).compute()
    assert isinstance(info.value, FileExistsError)


def test_resume_of_an_empty_or_new_directory_starts_the_run(client: Any, tmp_path: Any) -> None:
    files = ParallelMap(stacked, [1, 2], "x", output_dir=str(tmp_path / "new"),
                        resume=True).compute()
    assert [os.path.basename(f) for f in files] == ["stacked_0.h5", "stacked_1.h5"]


def test_a_lambda_run_can_be_resumed(client: Any, tmp_path: Any) -> None:
    """A lambda's fingerprint is its code, not the line it is written on."""
    out = str(tmp_path / "run")
    first = ParallelMap(lambda x: [x * k for k in range(3)], [1, 2], output_dir=out).compute()
    again = ParallelMap(lambda x: [x * k for k in range(3)], [1, 2], output_dir=out,
                        resume=True).compute()
    assert again == first
    with pytest.raises(ResumeMismatchError, match="the function differs"):
        ParallelMap(lambda x: [x * k for k in range(4)], [1, 2], output_dir=out,
                    resume=True).compute()


def test_a_function_fingerprint_is_the_same_in_another_process() -> None:
    import subprocess
    import sys

    code = ("from acme_xr.fingerprint import func_fingerprint; "
            "print(func_fingerprint(lambda x: [x * k for k in range(3)]))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}
    assert len(runs) == 1  # nested code objects hashed without their memory address


def test_an_inputs_fingerprint_is_the_same_in_another_process() -> None:
    """Arguments that are objects of a script's own class: the resumed script must match."""
    import subprocess
    import sys

    code = """if True:
        import numpy as np
        from acme_xr.fingerprint import inputs_fingerprint
        from acme_xr.inputs import distribute

        class Settings:
            def __init__(self):
                self.cutoff = 30.0

        def f(x, y, settings, extra):
            return x

        plan = distribute(f, ([1, 2, 3], np.arange(3.0), Settings(), {"a": [Settings()]}), {})
        print(inputs_fingerprint(plan))
    """
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}
    assert len(runs) == 1
