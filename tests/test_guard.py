"""A script without ``if __name__ == "__main__":``: one clear error, nothing created.

Each case runs a real script in a subprocess (as a user would) and inspects its exit
status, its stderr and the directory it ran in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from acme_xr.guard import _guarded_lines

# the README's example, cut to two calls
EXAMPLE = """\
import numpy as np
from acme_xr import ParallelMap

def f(trial, channel):
    return np.full(3, trial * channel), trial

{body}
"""

RUN = """\
with ParallelMap(f, [1, 2], channel=range(2), output_dir="run1", n_workers=2,
                 verbose=False{extra}) as pmap:
    files = pmap.compute({compute})
print("DONE", len(files))
"""


def run_python(args: list[str], cwd: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def script(tmp_path: Any, body: str) -> str:
    path = tmp_path / "analysis.py"
    path.write_text(EXAMPLE.format(body=body))
    return str(path)


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], line: int) -> None:
    assert proc.returncode != 0
    assert "Nanny failed to start" not in proc.stderr
    assert "MainGuardError" in proc.stderr
    assert f"analysis.py, line {line}" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr
    assert proc.stderr.count("Traceback") == 1
    assert len(proc.stderr.splitlines()) < 30, proc.stderr
    assert "DONE" not in proc.stdout


@pytest.mark.slow
def test_the_readme_example_without_the_guard_stops_with_one_clear_error(tmp_path: Any) -> None:
    path = script(tmp_path, RUN.format(extra="", compute=""))
    proc = run_python([path], tmp_path)
    assert_one_clear_error(proc, line=9)
    assert sorted(os.listdir(tmp_path)) == ["analysis.py"]  # no run1, no ACME_*


@pytest.mark.slow
def test_an_unguarded_call_inside_a_function_is_found_at_the_calling_line(
        tmp_path: Any) -> None:
    body = ("def main():\n" + textwrap.indent(RUN.format(extra="", compute=""), "    ")
            + "\nmain()\n")
    path = script(tmp_path, body.replace('output_dir="run1", ', ""))
    proc = run_python([path], tmp_path)
    assert_one_clear_error(proc, line=13)
    assert sorted(os.listdir(tmp_path)) == ["analysis.py"]


@pytest.mark.slow
def test_the_same_script_with_the_guard_runs(tmp_path: Any) -> None:
    body = 'if __name__ == "__main__":\n' + textwrap.indent(
        RUN.format(extra="", compute=""), "    ")
    proc = run_python([script(tmp_path, body)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "DONE 2" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["analysis.py", "run1"]


@pytest.mark.slow
@pytest.mark.parametrize("extra, compute", [("", "debug=True"),
                                            (", write_worker_results=False", "debug=True")])
def test_an_unguarded_script_that_starts_no_workers_runs(tmp_path: Any, extra: str,
                                                          compute: str) -> None:
    body = RUN.format(extra=extra, compute=compute)
    if extra:
        body = body.replace('output_dir="run1", ', "")
    proc = run_python([script(tmp_path, body)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "DONE 2" in proc.stdout


@pytest.mark.slow
def test_an_unguarded_script_whose_workers_are_forked_runs(tmp_path: Any) -> None:
    # forked workers inherit the script instead of importing it again
    body = ("import dask\n"
            "dask.config.set({'distributed.worker.multiprocessing-method': 'fork'})\n"
            + RUN.format(extra="", compute=""))
    proc = run_python([script(tmp_path, body)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "DONE 2" in proc.stdout


@pytest.mark.slow
def test_python_c_with_a_module_level_parallel_map_runs(tmp_path: Any) -> None:
    # no script file: multiprocessing's workers do not import __main__ again
    code = EXAMPLE.format(body=RUN.format(extra="", compute=""))
    proc = run_python(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "DONE 2" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["run1"]


@pytest.mark.slow
def test_a_worker_importing_the_script_stops_the_parallel_map_at_once(tmp_path: Any) -> None:
    # the user's own cluster is started under the guard, the ParallelMap is not: the
    # script's run itself is legitimate (a running client), but each worker's import of
    # the script would run the ParallelMap once more (here: before the worker is up)
    body = textwrap.dedent("""\
        if __name__ == "__main__":
            from distributed import Client, LocalCluster
            client = Client(LocalCluster(n_workers=1, processes=True,
                                         dashboard_address=None))
        """) + RUN.format(extra="", compute="")
    proc = run_python([script(tmp_path, body)], tmp_path)
    assert "MainGuardError" in proc.stderr
    assert "worker process imports the script" in proc.stderr
    # the worker created nothing: no run1 from its ParallelMap, no ACME_* directory
    assert "run1" not in os.listdir(tmp_path)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("ACME_")]


@pytest.mark.slow
def test_local_cluster_setup_in_an_unguarded_script_stops_with_the_same_error(
        tmp_path: Any) -> None:
    body = ("from acme_xr import local_cluster_setup, cluster_cleanup\n"
            "client = local_cluster_setup(n_workers=1)\n"
            "cluster_cleanup(client)\n")
    proc = run_python([script(tmp_path, body)], tmp_path)
    assert_one_clear_error(proc, line=8)
    assert "local_cluster_setup()" in proc.stderr


@pytest.mark.parametrize("source, guarded", [
    ("if __name__ == '__main__':\n    run()\nrun()\n", [(2, 2)]),
    ("if '__main__' == __name__:\n    a()\n    b()\n", [(2, 3)]),
    ("if __name__ != '__main__':\n    pass\nelse:\n    run()\n", [(4, 4)]),
    ("try:\n    if __name__ == '__main__':\n        run()\nexcept E:\n    pass\n", [(3, 3)]),
    # a block a worker skips: never runs there (nor, here, in the user's process)
    ("if __name__ == 'other':\n    run()\nelse:\n    run()\n", [(2, 2)]),
    ("if name == '__main__':\n    run()\n", []),
    # other spellings of the guard (a reviewer's script was refused with these)
    ("if __name__ == '__main__' and ok:\n    run()\n", [(2, 2)]),
    ("if __name__ in ('__main__',):\n    run()\n", [(2, 2)]),
    ("if not __name__ != '__main__':\n    run()\n", [(2, 2)]),
    ("if __name__ == '__main__' and True:\n    run()\n", [(2, 2)]),
    ("if __name__ not in {'__main__'}:\n    pass\nelse:\n    run()\n", [(4, 4)]),
    # not a guard: a worker's import runs these blocks too
    ("if __name__ == '__main__' or True:\n    run()\n", []),
    ("if __name__ != '__main__':\n    run()\n", []),
    # undecidable from the source: no false alarm
    ("if __name__ == '__main__' or ok:\n    run()\n", [(2, 2)]),
])
def test_guarded_blocks_are_found_in_the_source(source: str,
                                                guarded: list[tuple[int, int]]) -> None:
    assert _guarded_lines(source) == guarded
