"""Resume identity: the same run resumes, a different one is refused, in one process.

Every case of the table is built twice the same way (``"a"``, ``"a2"``: new objects, other
lines or other module files) and once changed (``"b"``). ``ParallelMap`` records the identity
in its header and ``_check_resumable`` compares it as a resume does; the processes and
launch styles are in ``test_fingerprint_launch.py``.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acme_xr import ParallelMap
from acme_xr.errors import InputError, InputTypeError, ResumeMismatchError
from acme_xr.manifest import Manifest
from acme_xr.map import _check_resumable

Built = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def header_of(built: Built, tmp_path: Path) -> dict[str, Any]:
    func, args, kwargs = built
    pmap = ParallelMap(func, *args, output_dir=str(tmp_path / "run"), **kwargs)
    return pmap._header(None)


def check(recorded: Built, now: Built, tmp_path: Path, **kw: Any) -> Any:
    theirs, ours = header_of(recorded, tmp_path), header_of(now, tmp_path)
    return _check_resumable(Manifest.new(2, theirs), ours, 2, "run", **kw)


def user_module(tmp_path: Path, name: str, source: str) -> Any:
    """Import ``source`` as the user's own module ``name`` (a file in tmp_path)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    if str(tmp_path) not in sys.path:
        sys.path.insert(0, str(tmp_path))
    sys.modules.pop(name, None)
    # a rewrite within the same second and of the same size would load the old .pyc
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _forget_user_modules() -> Any:
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("usermod_", "helper_", "fakepkg", "uses_fake")):
            del sys.modules[name]
    sys.path[:] = path


# -- the cases --------------------------------------------------------------------------
def scale(x: float, k: float = 1.0, *, offset: float = 0.0) -> float:
    return x * k + offset


def make_closure(k: int) -> Callable[[float], float]:
    def f(x: float) -> float:
        return x * k
    return f


class Scaler:
    def __init__(self, k: float) -> None:
        self.k = k

    def apply(self, x: float) -> float:
        return x * self.k


class Settings:
    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff


def takes(x: Any, extra: Any) -> Any:
    return x


LAMBDAS = {
    "a": lambda x: [x * k for k in range(2)],


    "a2": (  # the same lambda on other lines
        lambda x: [x * k for k in range(2)]),
    "b": lambda x: [x * k for k in range(3)],
}

MODULE = """
    '''The user's module{doc}.'''
    import numpy as np
    GAIN = {gain}

    def f(x):
        '''Scale x{doc}.'''{comment}
        return np.float64(x) * GAIN
"""


def closure(tmp_path: Path, v: str) -> Built:
    return make_closure(4 if v == "b" else 3), ([1, 2],), {}


def partial_args(tmp_path: Path, v: str) -> Built:
    return functools.partial(scale, 2.0 if v == "b" else 3.0), ([1, 2],), {}


def partial_keywords(tmp_path: Path, v: str) -> Built:
    return functools.partial(scale, offset=1.0 if v == "b" else 0.5, k=2.0), ([1, 2],), {}


def bound_method(tmp_path: Path, v: str) -> Built:
    return Scaler(2.5 if v == "b" else 1.5).apply, ([1, 2],), {}


def lambda_(tmp_path: Path, v: str) -> Built:
    return LAMBDAS[v], ([1, 2],), {}


def global_constant(tmp_path: Path, v: str) -> Built:
    mod = user_module(tmp_path, f"usermod_gc_{v}",
                      MODULE.format(gain=4 if v == "b" else 3, doc="", comment=""))
    return mod.f, ([1, 2],), {}


def helper_module(tmp_path: Path, v: str) -> Built:
    user_module(tmp_path, f"helper_m_{v}", f"""
        def offset(x):
            return x + {2 if v == "b" else 1}
    """)
    mod = user_module(tmp_path, f"usermod_hm_{v}", f"""
        import helper_m_{v} as helper

        def f(x):
            return helper.offset(x) * 2
    """)
    return mod.f, ([1, 2],), {}


def helper_function(tmp_path: Path, v: str) -> Built:
    """A helper imported by name, which itself calls a second helper (followed too)."""
    user_module(tmp_path, f"helper_f_{v}", f"""
        def inner(x):
            return x - {7 if v == "b" else 5}

        def outer(x):
            return inner(x) * 2
    """)
    mod = user_module(tmp_path, f"usermod_hf_{v}", f"""
        from helper_f_{v} import outer

        def f(x):
            return outer(x)
    """)
    return mod.f, ([1, 2],), {}


def large_array(tmp_path: Path, v: str) -> Built:
    weights = np.linspace(0.0, 1.0, 6000)
    if v == "b":
        weights[4321] += 1e-9  # one element among 6000
    return takes, ([1, 2], weights), {"n_inputs": 2}


def array_layout(tmp_path: Path, v: str) -> Built:
    """Equal values in another memory layout are the same input; one changed is not."""
    values = np.arange(5000.0).reshape(50, 100)
    if v == "a2":
        values = np.asfortranarray(values)[:, ::-1][:, ::-1]
    if v == "b":
        values = values.copy()
        values[49, 99] = -1
    return takes, ([1, 2], values), {}


def object_argument(tmp_path: Path, v: str) -> Built:
    settings = {"s": [Settings(31.0 if v == "b" else 30.0)], "tags": {"x", "y", "z"}}
    return takes, ([1, 2], settings), {}


CASES = [
    (closure, "the function differs"),
    (partial_args, "the function differs"),
    (partial_keywords, "the function differs"),
    (bound_method, "the function differs"),
    (lambda_, "the function differs"),
    (global_constant, "the function differs"),
    (helper_module, "the function differs"),
    (helper_function, "the function differs"),
    (large_array, "the inputs differ"),
    (array_layout, "the inputs differ"),
    (object_argument, "the inputs differ"),
]


@pytest.mark.parametrize("build, message", CASES, ids=[c[0].__name__ for c in CASES])
def test_the_same_run_resumes(tmp_path: Path, build: Any, message: str) -> None:
    assert not check(build(tmp_path, "a"), build(tmp_path, "a2"), tmp_path)


@pytest.mark.parametrize("build, message", CASES, ids=[c[0].__name__ for c in CASES])
def test_a_changed_run_is_refused(tmp_path: Path, build: Any, message: str) -> None:
    with pytest.raises(ResumeMismatchError, match=f"cannot resume run: {message}"):
        check(build(tmp_path, "a"), build(tmp_path, "b"), tmp_path)


def test_comments_docstrings_and_line_numbers_do_not_count(tmp_path: Path) -> None:
    first = user_module(tmp_path, "usermod_doc_a", MODULE.format(gain=3, doc="", comment=""))
    second = user_module(tmp_path, "usermod_doc_b", "\n\n\n" + MODULE.format(
        gain=3, doc=", with more words", comment="\n        # a comment\n"))
    assert first.f.__code__.co_firstlineno != second.f.__code__.co_firstlineno
    assert first.f.__doc__ != second.f.__doc__
    assert not check((first.f, ([1, 2],), {}), (second.f, ([1, 2],), {}), tmp_path)


FAKE = """
    __version__ = "{version}"

    def double(x):
        return x * {factor}
"""


def test_an_installed_package_counts_by_its_version(tmp_path: Path) -> None:
    """A package under site-packages: a new version differs, its code alone does not."""
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)

    def built(version: str, factor: int, tag: str) -> Built:
        user_module(site, "fakepkg", FAKE.format(version=version, factor=factor))
        mod = user_module(tmp_path, f"uses_fake_{tag}",
                          "import fakepkg\n\ndef f(x):\n    return fakepkg.double(x)\n")
        return mod.f, ([1, 2],), {}

    first = built("1.0", 2, "a")
    assert not check(first, built("1.0", 3, "a2"), tmp_path)
    with pytest.raises(ResumeMismatchError, match="the function differs"):
        check(first, built("2.0", 2, "b"), tmp_path)


# -- what cannot be fingerprinted, older runs, resume="force" ----------------------------
def test_an_object_that_cannot_be_fingerprinted_refuses_the_resume(tmp_path: Path) -> None:
    from acme_xr.errors import FingerprintError

    lock = threading.Lock()
    built: Built = (takes, ([1, 2], lock), {})
    # a new run starts: only its resume cannot be checked
    header = header_of(built, tmp_path)
    assert header["fingerprint"]["inputs"] is None
    with pytest.raises(FingerprintError, match=r"_thread\.lock .*argument 'extra'.*"
                                               r"resume='force'") as info:
        check(built, built, tmp_path)
    assert isinstance(info.value, ResumeMismatchError)
    with pytest.warns(UserWarning, match="resume='force' although .*_thread.lock"):
        assert check(built, built, tmp_path, force=True)


class Model:
    """Holds a lock: it neither pickles nor tokenizes; its repr has no address."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return "Model()"


def test_arrays_are_never_compared_by_a_truncated_repr(tmp_path: Path) -> None:
    """Beside an object that cannot be hashed, two arrays that differ in one element of
    6000 once got one fingerprint (a repr fallback); now the resume is refused."""
    first = np.linspace(0.0, 1.0, 6000)
    second = first.copy()
    second[4321] += 1e-3
    with pytest.raises(ResumeMismatchError, match="cannot fingerprint .*Model"):
        check((takes, ([1, 2], (first, Model())), {}), (takes, ([1, 2], (second, Model())), {}),
              tmp_path)


def test_a_closure_over_something_unpicklable_names_it(tmp_path: Path) -> None:
    from acme_xr.errors import FingerprintError
    from acme_xr.fingerprint import func_fingerprint

    handle = open(tmp_path / "data.txt", "w")  # noqa: SIM115 - the object under test
    try:
        def f(x: Any) -> Any:
            return handle.write(str(x))

        with pytest.raises(FingerprintError, match="closure variable 'handle' of .*f"):
            func_fingerprint(f)
    finally:
        handle.close()


def test_a_run_of_the_older_scheme_is_refused_with_an_explanation(tmp_path: Path) -> None:
    built = closure(tmp_path, "a")
    old = header_of(built, tmp_path)
    old["fingerprint"] = {"func": "0" * 32, "inputs": "1" * 32}  # acme_xr 7dca411
    manifest = Manifest.new(2, old)
    with pytest.raises(ResumeMismatchError, match="older acme_xr.*resume='force'"):
        _check_resumable(manifest, header_of(built, tmp_path), 2, "run")
    with pytest.warns(UserWarning, match="older acme_xr"):
        _check_resumable(manifest, header_of(built, tmp_path), 2, "run", force=True)


def test_force_does_not_override_the_layout(tmp_path: Path) -> None:
    recorded = header_of(closure(tmp_path, "a"), tmp_path)
    with pytest.raises(ResumeMismatchError, match="number of calls differs .* cannot override"):
        _check_resumable(Manifest.new(3, recorded), header_of(closure(tmp_path, "b"), tmp_path),
                         2, "run", force=True)


@pytest.mark.parametrize("value, error, match", [
    ("yes", InputError, r"resume='yes' is not valid: give True .* or 'force'"),
    (1, InputTypeError, "resume must be True, False or 'force', not 1"),
    (None, InputTypeError, "resume must be True, False or 'force', not None"),
])
def test_resume_takes_true_false_or_force(tmp_path: Path, value: Any, error: type,
                                          match: str) -> None:
    with pytest.raises(error, match=match):
        ParallelMap(scale, [1, 2], output_dir=str(tmp_path / "run"), resume=value)
    pmap = ParallelMap(scale, [1, 2], output_dir=str(tmp_path / "run"), resume="force")
    assert pmap.options.resume == "force"


def test_run_identity_is_the_manifest_entry(tmp_path: Path) -> None:
    from acme_xr.fingerprint import FINGERPRINT_VERSION, run_identity

    func, args, _ = partial_args(tmp_path, "a")
    pmap = ParallelMap(func, *args, output_dir=str(tmp_path / "run"))
    assert run_identity(func, pmap.plan) == pmap._header(None)["fingerprint"]
    assert run_identity(func, pmap.plan)["version"] == FINGERPRINT_VERSION


# -- arrays: the fingerprint is their bytes ----------------------------------------------
@settings(max_examples=60, deadline=None)
@given(arr=hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=1, max_dims=3,
                                                            max_side=6)),
       data=st.data())
def test_an_array_counts_by_all_its_bytes(arr: np.ndarray, data: Any) -> None:
    from acme_xr.fingerprint import inputs_fingerprint
    from acme_xr.inputs import distribute

    def digest(a: np.ndarray) -> str:
        return inputs_fingerprint(distribute(takes, ([0], [a]), {}, 1))

    assert digest(np.asfortranarray(arr)) == digest(arr.copy()) == digest(arr)
    changed = arr.copy()
    raw = changed.reshape(-1).view(np.uint8)
    byte = data.draw(st.integers(0, raw.size - 1), label="byte")
    raw[byte] ^= 0xFF
    assert digest(changed) != digest(arr)


def test_a_strided_array_is_hashed_a_slab_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-contiguous array is hashed in slabs (small copies), equal to its C copy."""
    from acme_xr import fingerprint, hashing
    from acme_xr.inputs import distribute

    monkeypatch.setattr(hashing, "_SLAB", 1000)
    big = np.arange(60 * 70, dtype=np.float64).reshape(60, 70)
    strided = np.asfortranarray(big)
    assert not strided.flags.c_contiguous
    digests = {fingerprint.inputs_fingerprint(distribute(takes, ([0], [a]), {}, 1))
               for a in (big, strided, big[::-1][::-1])}
    assert len(digests) == 1
