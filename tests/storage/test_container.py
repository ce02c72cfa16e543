"""The results container written while the run goes on (issue 12): the links of the calls
done are added as batches arrive, the rest and the virtual dataset at the end; what lands
is the container written at once, and nothing temporary is left."""

from __future__ import annotations

import os
import pickle
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.manifest import DONE, FAILED, Manifest
from acme_xr.storage import hdf5
from acme_xr.storage.atomic import TMP_SUFFIX
from acme_xr.storage.container import LiveContainer, write_container
from acme_xr.storage.per_call import HdfPayloads
from acme_xr.storage.values import to_variables


def _links(path: str) -> dict[str, tuple[str, str]]:
    with h5py.File(path, "r") as fh:
        return {name: (link.filename, link.path) for name in fh
                for link in [fh.get(name, getlink=True)] if isinstance(link, h5py.ExternalLink)}


def _stacked(path: str) -> np.ndarray:
    with h5py.File(path, "r") as fh:
        return np.asarray(fh["result_0"][()])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**16), stacked=st.booleans())
def test_a_container_written_live_is_the_one_written_at_once(
        tmp_path_factory: Any, n: int, seed: int, stacked: bool) -> None:
    rng = np.random.default_rng(seed)
    d = tmp_path_factory.mktemp("run")
    done = sorted(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).tolist())
    for i in done:
        hdf5.write_payload(str(d / f"f_{i}.h5"), to_variables(np.full(3, float(i))))
    payloads = [(i, f"f_{i}.h5") for i in done]
    virtual = ((None, 3), np.dtype("f8")) if stacked else None
    write_container(str(d / "whole.h5"), payloads, n_calls=n, virtual=virtual)
    live = LiveContainer(str(d / "live.h5"))
    # batches arrive in any order, some calls in two looks
    arrived = list(payloads)
    rng.shuffle(arrived)
    cut = sorted(rng.integers(0, len(arrived) + 1, size=3).tolist())
    for part in (arrived[:cut[0]], arrived[cut[0]:cut[2]], arrived[cut[1]:cut[2]]):
        live.add(part)
    assert live.linked == cut[2]
    live.finish(payloads, n_calls=n, virtual=virtual)
    assert _links(str(d / "live.h5")) == _links(str(d / "whole.h5"))
    if stacked:
        np.testing.assert_array_equal(_stacked(str(d / "live.h5")), _stacked(str(d / "whole.h5")))
    assert not [f for f in os.listdir(d) if f.endswith(TMP_SUFFIX)]


def test_a_call_linked_but_not_done_at_the_end_is_not_in_the_container(tmp_path: Any) -> None:
    live = LiveContainer(str(tmp_path / "f.h5"))
    live.add([(0, "f_0.h5"), (1, "f_1.h5")])
    live.finish([(1, "f_1.h5"), (2, "f_2.h5")], n_calls=3)
    assert sorted(_links(str(tmp_path / "f.h5"))) == ["comp_1", "comp_2"]
    assert os.listdir(tmp_path) == ["f.h5"]


def test_a_virtual_dataset_that_fails_leaves_no_temporary_file(tmp_path: Any) -> None:
    hdf5.write_payload(str(tmp_path / "f_0.h5"), to_variables(np.zeros(3)))
    live = LiveContainer(str(tmp_path / "f.h5"))
    live.add([(0, "f_0.h5")])
    with pytest.raises((ValueError, TypeError)):
        live.finish([(0, "f_0.h5")], n_calls=1, virtual=((None, 3), np.dtype("U3")))
    assert os.listdir(tmp_path) == ["f_0.h5"]


def test_a_backend_sent_to_a_worker_carries_no_open_container(tmp_path: Any) -> None:
    backend = HdfPayloads(output_dir=str(tmp_path), stem="f")
    manifest = Manifest.new(4, {"func": {"name": "f"}})
    manifest.status[[0, 2]] = DONE
    manifest.fmt[0] = manifest.fmt[2] = "h5"
    manifest.status[3] = FAILED
    backend.collected([], manifest)
    temporary = [f for f in os.listdir(tmp_path) if f.endswith(TMP_SUFFIX)]
    assert len(temporary) == 1 and backend._live.linked == 2
    shipped = pickle.loads(pickle.dumps(backend))
    assert shipped._live.linked == 0 and shipped.payload(3) == backend.payload(3)
    manifest.status[1], manifest.fmt[1] = DONE, "h5"
    assert backend.finalize(manifest) == str(tmp_path / "f.h5")
    assert sorted(_links(str(tmp_path / "f.h5"))) == ["comp_0", "comp_1", "comp_2"]
    assert os.listdir(tmp_path) == ["f.h5"]


def _vec(x: int) -> np.ndarray:
    return np.full(3, float(x))


def test_a_run_links_its_calls_while_it_runs(client: Any, tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Most links are written before the run's end (looks every 0 s here), the container
    holds exactly the calls done, and the run directory has no temporary file left."""
    seen: list[int] = []
    finish = LiveContainer.finish

    def spy(live: LiveContainer, *args: Any, **kwargs: Any) -> None:
        seen.append(live.linked)
        finish(live, *args, **kwargs)

    monkeypatch.setattr(HdfPayloads, "_LINK_EVERY", 0.0)
    monkeypatch.setattr(LiveContainer, "finish", spy)
    n = 300
    with ParallelMap(_vec, list(range(n)), output_dir=str(tmp_path / "run"), n_inputs=n,
                     result_shape=(None, 3), verbose=False) as pmap:
        files = pmap.compute()
    assert seen and seen[0] > 0  # links written before the end
    container = str(tmp_path / "run" / "_vec.h5")
    assert sorted(_links(container)) == sorted(f"comp_{i}" for i in range(n))
    np.testing.assert_array_equal(_stacked(container)[:, 0], np.arange(n, dtype=float))
    assert len(files) == n
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(TMP_SUFFIX)]


def test_a_ctrl_c_while_linking_leaves_the_container_to_be_written_at_once(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links half written when a KeyboardInterrupt hit are not trusted (adding them again
    would fail as duplicates): the end writes the container from scratch."""
    from acme_xr.storage import container

    live = LiveContainer(str(tmp_path / "f.h5"))
    live.add([(0, "f_0.h5")])
    real = container._link

    def interrupted(fh: Any, payloads: Any) -> None:
        real(fh, payloads[:1])
        raise KeyboardInterrupt

    monkeypatch.setattr(container, "_link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        live.add([(1, "f_1.h5"), (2, "f_2.h5")])
    monkeypatch.setattr(container, "_link", real)
    assert live.off and os.listdir(tmp_path) == []
    live.finish([(0, "f_0.h5"), (1, "f_1.h5"), (2, "f_2.h5")], n_calls=3)
    assert sorted(_links(str(tmp_path / "f.h5"))) == ["comp_0", "comp_1", "comp_2"]


def test_a_resumed_run_links_its_earlier_calls_over_several_looks(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HdfPayloads, "_LINK_EVERY", 0.0)
    monkeypatch.setattr(HdfPayloads, "_LINKS_PER_LOOK", 3)
    backend = HdfPayloads(output_dir=str(tmp_path), stem="f")
    manifest = Manifest.new(8, {"func": {"name": "f"}})
    manifest.status[:7] = DONE
    manifest.fmt[:7] = "h5"
    counts = []
    for _ in range(4):
        backend._live.last = 0.0  # as if the interval had passed
        backend.collected([], manifest)
        counts.append(backend._live.linked)
    assert counts == [3, 6, 7, 7]
    backend.finalize(manifest)
    assert sorted(_links(str(tmp_path / "f.h5"))) == [f"comp_{i}" for i in range(7)]
