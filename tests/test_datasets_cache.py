"""The Arrow cache: identical tensors to the raw path, saved splits, invalidation, robustness."""

from __future__ import annotations

import json
import os
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import one_thread, write_cremad, write_luma, write_mmimdb, write_mmimdb_hdf5, write_smnist  # noqa: F401  (autouse fixture)

from miles_tune.data import DatasetError, create_dataset, iterate_batches
from miles_tune.data.cache import ArrowSplit, cache_key, prepare
from miles_tune.data.cremad import CremaD

SPLITS = ("train", "val", "test")
FIXTURES = {
    "cremad": lambda root: (
        "cremad",
        {**write_cremad(root, per_class=2), "audio_size": 24, "image_size": 24},
    ),
    "cremad-frames": lambda root: (
        "cremad",
        {**write_cremad(root, per_class=2, video="frames"), "audio_size": 24, "image_size": 24},
    ),
    "smnist": lambda root: ("smnist", {**write_smnist(root), "n_train": 30, "n_val": 10, "n_test": 10}),
    "luma": lambda root: ("luma", {**write_luma(root), "n_mels": 16, "n_frames": 16, "image_size": 40}),
    "mmimdb": lambda root: ("mmimdb", {**write_mmimdb(root), "image_size": 24, "resize": 28}),
    "mmimdb-tokens": lambda root: (
        "mmimdb",
        {**write_mmimdb(root), "image_size": 24, "resize": 28, "text": "tokens"},
    ),
    "mmimdb-hdf5": lambda root: ("mmimdb", {**write_mmimdb_hdf5(root), "image_size": 24, "resize": 28}),
}


def build(name: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the known-broken CREMA-D clip
        return create_dataset(name, **kw)


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_cache_gives_the_raw_paths_tensors(fixture: str, tmp_path: Path) -> None:
    name, kw = FIXTURES[fixture](tmp_path / fixture)
    cached = build(name, **kw)
    raw = build(name, **kw, cache=False)
    assert cached.info["read_from"] == "cache" and raw.info["read_from"] == "raw"
    assert cached.modalities == raw.modalities
    for s in SPLITS:
        a, b = cached.split(s), raw.split(s)
        assert a.ids == b.ids and len(a) == len(b) > 0
        xa, ya = a.get_batch(range(len(a)))
        xb, yb = b.get_batch(range(len(b)))
        assert torch.equal(ya, yb)
        for m in cached.modalities:
            assert xa[m].dtype == xb[m].dtype and xa[m].shape == xb[m].shape
            assert torch.equal(xa[m], xb[m]), f"{fixture} {s} {m}: max diff {(xa[m] - xb[m]).abs().max()}"
        x1, y1 = a[len(a) - 1]  # single items are the batch rows
        assert torch.equal(y1, ya[-1]) and all(torch.equal(x1[m], xa[m][-1]) for m in cached.modalities)


def test_round_trip_of_the_stored_arrays_is_exact(tmp_path: Path) -> None:
    kw = write_cremad(tmp_path / "c", per_class=2, broken=False)
    source = CremaD(kw["data_root"], audio_size=24, image_size=24)
    path = prepare(source, progress=False, chunk_rows=4)  # several record batches per file
    split_ids = json.loads((path / "split.json").read_text())
    for s in SPLITS:
        ids = split_ids[s]
        stored = source.decode_batch(ids)
        arrow = ArrowSplit(path / f"{s}.arrow", ("audio", "video"))
        assert arrow.ids == ids
        back = arrow._stored(np.arange(len(ids)))
        for f in ("audio", "video", "label"):
            assert back[f].dtype == stored[f].dtype and np.array_equal(back[f], stored[f])
        shuffled = np.random.default_rng(0).permutation(len(ids))  # gathers across record batches
        assert np.array_equal(arrow._stored(shuffled)["audio"], stored["audio"][shuffled])


def test_split_is_saved_beside_the_cache_and_reused(tmp_path: Path) -> None:
    kw = {**write_smnist(tmp_path / "s"), "n_train": 30, "n_val": 10, "n_test": 10}
    a = create_dataset("smnist", **kw)
    saved = json.loads(Path(a.info["split_file"]).read_text())
    assert Path(a.info["split_file"]).parent == Path(a.info["cache_dir"])
    assert {s: a.split(s).ids for s in SPLITS} == saved
    assert len(saved["train"]) == 30 and all(i.startswith("test/") for i in saved["test"])
    b = create_dataset("smnist", **kw)
    assert b.info["cache_dir"] == a.info["cache_dir"] and b.train.ids == a.train.ids
    c = create_dataset("smnist", **kw, seed=1)
    assert c.info["cache_dir"] != a.info["cache_dir"] and c.train.ids != a.train.ids


def test_changed_settings_or_files_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {**write_smnist(tmp_path / "s"), "n_train": 30, "n_val": 10, "n_test": 10}
    first = create_dataset("smnist", **kw)
    # same settings, same files: no decoding at all
    monkeypatch.setattr("miles_tune.data.smnist.SMnist.decode_batch", lambda *a, **k: pytest.fail("rebuilt"))
    assert create_dataset("smnist", **kw).info["cache_dir"] == first.info["cache_dir"]
    monkeypatch.undo()
    resized = create_dataset("smnist", **kw, image_size=20)  # a preprocessing setting
    assert resized.info["cache_dir"] != first.info["cache_dir"]
    assert resized.train[0][0]["image"].shape == (1, 20, 20)
    labels = Path(kw["data_root"]) / "labels_train.npy"
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed
    touched = create_dataset("smnist", **kw)
    assert touched.info["cache_dir"] not in (first.info["cache_dir"], resized.info["cache_dir"])
    assert len(list(Path(first.info["cache_dir"]).parent.glob("smnist-*"))) == 3  # old caches are kept


def test_cache_dir_option_and_key_content(tmp_path: Path) -> None:
    kw = write_cremad(tmp_path / "c", per_class=2, broken=False)
    data = create_dataset("cremad", **kw, audio_size=16, image_size=16, cache_dir=str(tmp_path / "elsewhere"))
    assert Path(data.info["cache_dir"]).parent == tmp_path / "elsewhere"
    key, desc = cache_key(CremaD(kw["data_root"], audio_size=16, image_size=16))
    assert data.info["cache_key"] == key
    assert desc["settings"]["nperseg"] == 512 and desc["files"]["count"] == 24  # 12 WAV + 12 FLV
    meta = json.loads((Path(data.info["cache_dir"]) / "meta.json").read_text())
    assert meta["description"] == desc and meta["sizes"] == data.info["sizes"]


def test_concurrent_builds_decode_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {**write_smnist(tmp_path / "s"), "n_train": 30, "n_val": 10, "n_test": 10}
    from miles_tune.data.smnist import SMnist

    calls = []
    original = SMnist.decode_batch

    def counting(self, ids):
        calls.append(len(ids))
        return original(self, ids)

    monkeypatch.setattr(SMnist, "decode_batch", counting)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(create_dataset("smnist", **kw))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.info["cache_dir"] for r in results}) == 1
    assert sum(calls) == 50  # one build: every sample decoded once


def test_corrupt_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    kw = {**write_smnist(tmp_path / "s"), "n_train": 30, "n_val": 10, "n_test": 10}
    data = create_dataset("smnist", **kw)
    path = Path(data.info["cache_dir"]) / "val.arrow"
    path.write_bytes(b"not arrow")
    with pytest.raises(DatasetError, match="corrupt cache file .*val.arrow.*delete its folder"):
        create_dataset("smnist", **kw)


def test_arrow_split_batches_pickles_and_feeds_workers(tmp_path: Path) -> None:
    data = create_dataset("smnist", **write_smnist(tmp_path / "s"), n_train=30, n_val=10, n_test=10)
    train = data.train
    assert isinstance(train, ArrowSplit)
    batches = list(iterate_batches(train, 8, shuffle=True, seed=3))
    assert [len(y) for _, y in batches] == [8, 8, 8, 6]
    order = torch.randperm(30, generator=torch.Generator().manual_seed(3))  # the TensorSplit order
    x_all, y_all = train.get_batch(order)
    assert torch.equal(torch.cat([y for _, y in batches]), y_all)
    assert torch.equal(torch.cat([x["image"] for x, _ in batches]), x_all["image"])
    clone = pickle.loads(pickle.dumps(train))
    assert torch.equal(clone.get_batch([0, 5])[0]["audio"], train.get_batch([0, 5])[0]["audio"])
    with_workers = list(iterate_batches(train, 8, shuffle=True, seed=3, num_workers=1))
    assert torch.equal(torch.cat([y for _, y in with_workers]), y_all)
    with pytest.raises(IndexError):
        train.get_batch([30])


def test_prepare_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from miles_tune.data.__main__ import main

    root = write_smnist(tmp_path / "s")["data_root"]
    sets = ["--set", "n_train=30", "--set", "n_val=10", "--set", "n_test=10"]
    assert main(["prepare", "--dataset", "smnist", "--data-root", root, "--quiet", *sets]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sizes"] == {"train": 30, "val": 10, "test": 10} and summary["n_skipped"] == 0
    assert Path(summary["split_file"]).is_file() and summary["cache_bytes"] > 0
    assert summary["input_shapes"] == {"image": [1, 28, 28], "audio": [1, 28, 28]}
    data = create_dataset("smnist", data_root=root, n_train=30, n_val=10, n_test=10)  # training reads it
    assert data.info["cache_dir"] == summary["cache_dir"]
    assert main(["list-cache", "--data-root", root]) == 0
    assert summary["cache_dir"] in capsys.readouterr().out
    assert main(["prepare", "--dataset", "smnist", "--data-root", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err
