"""Resume identity across processes and launch styles, and resumes run end to end.

A script creates a run with ``python script.py``; the same source resumes it with
``python -c``, ``python -m`` and imported from another script (accepted), a changed closure constant is refused, and
``resume="force"`` takes it with a warning. The calls run with ``compute(debug=True)``:
this is about the identity, not the cluster, and keeps each process small and quick.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acme_xr import ParallelMap
from acme_xr.errors import ComputeError, ResumeMismatchError

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import functools
import sys

import numpy as np

from acme_xr import ParallelMap

K = {k}
TAGS = {{"alpha", "beta", "gamma", "delta"}}  # a set: its order changes between processes


class Settings:
    def __init__(self, cutoff):
        self.cutoff = cutoff


def make(k):
    def f(x, weights, settings):
        return x * k + weights.sum() + settings.cutoff + len(TAGS)
    return f


def main(out, mode):
    resume = {{"new": False, "resume": True, "force": "force"}}[mode]
    # a partial (its repr holds a memory address) of a closure over K
    func = functools.partial(make(K), settings=Settings(30.0))
    pmap = ParallelMap(func, [1, 2], np.linspace(0.0, 1.0, 6000), n_inputs=2,
                       output_dir=out, resume=resume, verbose=False, setup_interactive=False)
    print(len(pmap.compute(debug=True)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''

IMPORTED = """if __name__ == "__main__":
    import sys
    import runmod
    runmod.main(sys.argv[1], sys.argv[2])
"""


def launch(tmp_path: Path, style: str, source: str, mode: str) -> subprocess.CompletedProcess[str]:
    out = str(tmp_path / "run")
    if style == "script":
        (tmp_path / "script.py").write_text(source)
        cmd = [sys.executable, "script.py", out, mode]
    elif style in ("module", "imported"):  # the function's module: __main__, runmod
        (tmp_path / "runmod.py").write_text(source)
        cmd = [sys.executable, *(["-m", "runmod"] if style == "module" else ["-c", IMPORTED]),
               out, mode]
    else:
        cmd = [sys.executable, "-c", source, out, mode]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("PYTHONHASHSEED", None)  # each process its own string hashes, as for a user
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def payload_times(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*_[0-9].h5")}


def test_a_script_resumes_across_launch_styles_and_refuses_a_changed_closure(
        tmp_path: Path) -> None:
    same, changed = SCRIPT.format(k=3), SCRIPT.format(k=4)
    first = launch(tmp_path, "script", same, "new")
    assert first.returncode == 0, first.stderr
    out = tmp_path / "run"
    before = payload_times(out)
    assert len(before) == 2

    for style in ("command", "module", "imported", "script"):
        again = launch(tmp_path, style, same, "resume")
        assert again.returncode == 0, f"{style}: {again.stderr}"
        assert again.stdout.strip() == "2"
    assert payload_times(out) == before  # nothing ran again

    refused = launch(tmp_path, "command", changed, "resume")
    assert refused.returncode != 0
    assert "ResumeMismatchError" in refused.stderr and "the function differs" in refused.stderr
    assert payload_times(out) == before

    forced = launch(tmp_path, "command", changed, "force")
    assert forced.returncode == 0, forced.stderr
    assert "resume='force' although the function differs" in forced.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["forced_resumes"][0]["differences"] == ["the function differs"]
    # the forced run is now the recorded one: it resumes without force
    assert launch(tmp_path, "command", changed, "resume").returncode == 0


# -- end to end through ParallelMap, on a real cluster ----------------------------------
def scaled(i: int, k: float, flags: str) -> np.ndarray:
    if os.path.exists(os.path.join(flags, str(i))):
        raise RuntimeError(f"call {i} is not ready")
    return np.arange(3.0) * k + i


def make_closure(k: float) -> Any:
    def f(i: int, flags: str) -> np.ndarray:
        return scaled(i, k, flags)
    return f


def test_a_changed_closure_is_refused_and_force_takes_it(client: Any, tmp_path: Path) -> None:
    out, flags = str(tmp_path / "run"), str(tmp_path / "flags")
    ParallelMap(make_closure(3.0), [0, 1, 2], flags, output_dir=out).compute()
    before = sorted(os.listdir(out))
    with pytest.raises(ResumeMismatchError, match="the function differs"):
        ParallelMap(make_closure(4.0), [0, 1, 2], flags, output_dir=out, resume=True).compute()
    assert sorted(os.listdir(out)) == before
    with pytest.warns(UserWarning, match="the function differs"):
        ParallelMap(make_closure(4.0), [0, 1, 2], flags, output_dir=out,
                    resume="force").compute()


def test_an_identical_partial_resumes(client: Any, tmp_path: Path) -> None:
    out, flags = str(tmp_path / "run"), tmp_path / "flags"
    flags.mkdir()
    (flags / "1").write_text("")
    with pytest.raises(ComputeError, match="1 of 3 calls failed"):
        ParallelMap(functools.partial(make_closure(2.0), flags=str(flags)), [0, 1, 2],
                    output_dir=out).compute()
    (flags / "1").unlink()
    # built anew, as a resuming script does: other objects at other addresses
    files = ParallelMap(functools.partial(make_closure(2.0), flags=str(flags)), [0, 1, 2],
                        output_dir=out, resume=True).compute()
    assert len(files) == 3 and all(os.path.exists(f) for f in files)


VALUES = '''
import collections, dataclasses, datetime, decimal, enum, fractions, functools, pathlib, re
import numpy as np, pandas as pd, xarray as xr
from acme_xr.fingerprint import func_fingerprint, inputs_fingerprint
from acme_xr.inputs import distribute

P = collections.namedtuple("P", "a b")


@dataclasses.dataclass(frozen=True)
class D:
    a: int
    b: tuple = (1, 2)


class E(enum.IntEnum):
    X = 1


def f(x, extra):
    return x


values = {
    "namedtuple": P(1, "x"), "dataclass": D(3), "enum": E.X, "path": pathlib.Path("/a/b"),
    "datetime": datetime.datetime(2020, 1, 2, 3, 4), "decimal": decimal.Decimal("1.5"),
    "fraction": fractions.Fraction(1, 3), "ordered": collections.OrderedDict(a=1),
    "defaultdict": collections.defaultdict(list, a=[1]), "counter": collections.Counter("abc"),
    "frozenset": frozenset({"a", "b", "c", 1.5}), "series": pd.Series([1, 2]),
    "dataframe": pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}),
    "dataset": xr.Dataset({"v": ("t", np.arange(3.0))}, coords={"t": [1, 2, 3]}),
    "generator": np.random.default_rng(0), "regex": re.compile("a+"),
    "masked": np.ma.masked_array([1, 2], mask=[0, 1]),
    "structured": np.zeros(3, dtype=[("a", "f4"), ("b", "U3")]),
    "objects": np.array([{"a": 1}, None], dtype=object), "type": int, "function": np.mean,
    "partial": functools.partial(np.sum, axis=0),
}
for name, value in values.items():
    print(name, inputs_fingerprint(distribute(f, ([1, 2], value), {}, 2)))
print("func", func_fingerprint(functools.partial(f, extra=D(1))))
'''


def test_values_of_many_kinds_hash_alike_in_every_process(tmp_path: Path) -> None:
    """Sets (whose order follows PYTHONHASHSEED), pandas, xarray, objects pickled through
    copyreg (re.Pattern), classes of __main__: one digest per value, in any process."""
    runs = []
    for _ in range(2):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        done = subprocess.run([sys.executable, "-c", VALUES], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout)
    assert runs[0] == runs[1] and len(runs[0].splitlines()) == 23
