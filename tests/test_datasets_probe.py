"""Default data root, the cheap probe, strict data in prepare, and messages that name data.<option>."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from fixtures_data import (  # noqa: F401  (one_thread: autouse fixture)
    one_thread,
    write_cremad,
    write_luma,
    write_mmimdb,
    write_mmimdb_hdf5,
    write_smnist,
)

from miles_tune.data import (
    DatasetError,
    create_dataset,
    dataset_info,
    default_data_root,
    list_datasets,
    probe_dataset,
)
from miles_tune.data.__main__ import main
from miles_tune.errors import ConfigError
from miles_tune.metrics import check_metric

SMNIST = {"n_train": 30, "n_val": 10, "n_test": 10}

# name -> (writer of the fixture, extra options, expected (task, modalities, num_classes))
FIXTURES: dict[str, tuple[Any, dict[str, Any], tuple[str, tuple[str, ...], int]]] = {
    "cremad": (write_cremad, {"audio_size": 24, "image_size": 24}, ("multiclass", ("audio", "video"), 6)),
    "cremad-frames": (
        lambda root: write_cremad(root, video="frames"),
        {"audio_size": 24, "image_size": 24},
        ("multiclass", ("audio", "video"), 6),
    ),
    "smnist": (write_smnist, SMNIST, ("multiclass", ("image", "audio"), 10)),
    "luma": (
        write_luma,
        {"n_mels": 16, "n_frames": 16, "image_size": 40},
        ("multiclass", ("audio", "image"), 3),
    ),
    "mmimdb": (write_mmimdb, {"image_size": 24, "resize": 28}, ("multilabel", ("text", "image"), 23)),
    "mmimdb-hdf5": (
        write_mmimdb_hdf5,
        {"image_size": 24, "resize": 28},
        ("multilabel", ("text", "image"), 23),
    ),
}


def dataset_of(fixture: str) -> str:
    return fixture.split("-")[0]


def build(name: str, **kw: Any):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the known-broken CREMA-D clip
        return create_dataset(name, **kw)


def timed_probe(name: str, **kw: Any):
    started = time.perf_counter()
    try:
        return probe_dataset(name, **kw), time.perf_counter() - started
    except DatasetError as exc:
        return exc, time.perf_counter() - started


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# --- 1. the default data root ---------------------------------------------------------------------


def test_default_root_is_under_home_cache_unless_the_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MILES_TUNE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert default_data_root("mmimdb") == tmp_path / "me" / ".cache" / "miles_tune" / "data" / "mmimdb"
    monkeypatch.setenv("MILES_TUNE_DATA", str(tmp_path / "data"))
    assert default_data_root("smnist") == tmp_path / "data" / "smnist"


def test_create_dataset_reads_the_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILES_TUNE_DATA", str(tmp_path / "home"))
    write_smnist(tmp_path / "home" / "smnist")
    data = create_dataset("smnist", **SMNIST, progress=False)
    assert data.info["data_root"] == str(tmp_path / "home" / "smnist")
    assert Path(data.info["cache_dir"]).parent == tmp_path / "home" / "smnist" / ".miles_cache"
    assert len(data.train) == 30


def test_prepare_without_data_root_uses_the_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MILES_TUNE_DATA", str(tmp_path / "home"))
    root = tmp_path / "home" / "smnist"
    write_smnist(root)
    sets = ["--set", "data.n_train=30", "--set", "n_val=10", "--set", "data.n_test=10"]  # both spellings
    assert main(["prepare", "--dataset", "smnist", "--quiet", *sets]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data_root"] == str(root)
    assert Path(summary["cache_dir"]).parent == root / ".miles_cache"
    assert summary["sizes"] == {"train": 30, "val": 10, "test": 10}
    assert main(["list-cache"]) == 0  # without arguments: every file dataset's default root
    assert summary["cache_dir"] in capsys.readouterr().out
    # training with the same options reads that cache, and the probe says it is ready
    assert create_dataset("smnist", **SMNIST).info["cache_dir"] == summary["cache_dir"]
    probe = probe_dataset("smnist", **SMNIST)
    assert probe.cache_ready and str(probe.cache_dir) == summary["cache_dir"]


def test_prepare_without_data_root_and_no_data_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MILES_TUNE_DATA", str(tmp_path / "home"))
    assert main(["prepare", "--dataset", "mmimdb", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"mmimdb: no data at {tmp_path / 'home' / 'mmimdb'}" in err
    assert "set data.data_root=PATH or MILES_TUNE_DATA" in err
    assert "python -m miles_tune.data prepare --dataset mmimdb" in err


# --- 2. the probe ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cremad", "smnist", "luma", "mmimdb"])
def test_probe_refuses_a_missing_default_root_fast(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MILES_TUNE_DATA", str(tmp_path / "empty"))
    exc, seconds = timed_probe(name)
    assert isinstance(exc, DatasetError) and isinstance(exc, ConfigError)
    where = tmp_path / "empty" / name
    assert one_line(exc) == (
        f"{name}: no data at {where} (MILES_TUNE_DATA={tmp_path / 'empty'}; set data.data_root=PATH or "
        f"MILES_TUNE_DATA; put the published files there, then run: "
        f"python -m miles_tune.data prepare --dataset {name})"
    )
    assert seconds < 0.5


def test_probe_message_without_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MILES_TUNE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError) as info:
        probe_dataset("mmimdb")
    assert str(info.value) == (
        f"mmimdb: no data at {tmp_path}/.cache/miles_tune/data/mmimdb (set data.data_root=PATH or "
        "MILES_TUNE_DATA; put the published files there, then run: "
        "python -m miles_tune.data prepare --dataset mmimdb)"
    )
    with pytest.raises(DatasetError, match=r"data.data_root=.*elsewhere is not a folder"):
        probe_dataset("mmimdb", data_root=str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_probe_passes_on_each_fixture_without_building(
    fixture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, extra, (task, modalities, num_classes) = FIXTURES[fixture]
    name = dataset_of(fixture)
    kw = {**writer(tmp_path / fixture), **extra}
    from miles_tune.data.cache import FileDataset

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail("the probe planned or decoded")

    for cls in FileDataset.__subclasses__():  # nothing decoded, no model loaded, no cache written
        monkeypatch.setattr(cls, "plan", refuse)
        monkeypatch.setattr(cls, "decode_batch", refuse)
    monkeypatch.setattr("miles_tune.data.text.load_text_model", lambda *a, **k: pytest.fail("model loaded"))
    probe, seconds = timed_probe(name, **kw)
    assert not isinstance(probe, Exception), probe
    assert (probe.task, probe.modalities, probe.num_classes) == (task, modalities, num_classes)
    assert probe.data_root is not None and probe.data_root.is_dir() and probe.n_files > 0
    assert not probe.cache_ready and not probe.cache_dir.exists()
    assert not list(Path(kw["data_root"]).rglob(".miles_cache"))
    assert seconds < 0.5
    check_metric(probe.default_metric, probe.task)


def test_probe_finds_the_cache_the_build_writes(tmp_path: Path) -> None:
    kw = {**write_smnist(tmp_path / "s"), **SMNIST, "cache_dir": str(tmp_path / "cache")}
    before = probe_dataset("smnist", **kw)
    data = create_dataset("smnist", **kw)
    after = probe_dataset("smnist", **kw)
    assert not before.cache_ready and after.cache_ready
    assert str(before.cache_dir) == str(after.cache_dir) == data.info["cache_dir"]
    assert Path(data.info["cache_dir"]).parent == tmp_path / "cache"
    assert (after.task, after.modalities, after.num_classes) == (data.task, data.modalities, data.num_classes)
    assert probe_dataset("smnist", **{**kw, "seed": 1}).cache_ready is False  # other settings, other cache


def test_probe_refuses_missing_files_naming_path_and_setting(tmp_path: Path) -> None:
    kw = write_smnist(tmp_path / "s")
    root = Path(kw["data_root"])
    with pytest.raises(DatasetError, match=r"data.n_train \+ data.n_val = 90 exceeds the 80 rows of"):
        probe_dataset("smnist", **kw, n_train=80, n_val=10)  # from the .npy header alone
    (root / "labels_test.npy").unlink()
    exc, seconds = timed_probe("smnist", **kw, **SMNIST)
    assert isinstance(exc, DatasetError) and seconds < 0.5
    assert one_line(exc).startswith(f"smnist: missing file {root / 'labels_test.npy'}")
    assert f"data.data_root={root}" in str(exc)

    kw = write_mmimdb(tmp_path / "m")
    movie = json.loads((tmp_path / "m" / "mmimdb" / "split.json").read_text())["test"][0]
    (tmp_path / "m" / "mmimdb" / "dataset" / f"{movie}.jpeg").unlink()
    with pytest.raises(DatasetError, match=f"mmimdb: missing file .*{movie}.jpeg .*data.data_root="):
        probe_dataset("mmimdb", **kw)

    kw = write_luma(tmp_path / "l")
    table = Path(kw["data_root"]) / "audio" / "datalist.csv"
    pd.read_csv(table).drop(columns=["label"]).to_csv(table, index=False)
    with pytest.raises(DatasetError, match=r"datalist.csv lacks column\(s\) \['label'\]"):
        probe_dataset("luma", **kw)  # from the CSV header line

    kw = write_cremad(tmp_path / "c", per_class=1, broken=False)
    shutil.rmtree(Path(kw["data_root"]) / "VideoFlash")
    shutil.rmtree(Path(kw["data_root"]) / "AudioWAV")
    with pytest.raises(DatasetError, match="cremad: missing folder .*AudioWAV: the CREMA-D WAV files"):
        probe_dataset("cremad", **kw)


def test_probe_of_in_memory_datasets_checks_options() -> None:
    probe = probe_dataset("synthetic", num_classes=4)
    assert (probe.task, probe.modalities, probe.num_classes, probe.data_root) == (
        "multiclass",
        ("fast", "slow"),
        4,
        None,
    )
    probe = probe_dataset("mfeat", views=["pix", "kar", "mor"])
    assert probe.modalities == ("pix", "kar", "mor") and probe.num_classes == 10
    for name, kw, message in (
        ("synthetic", {"p_fast": 2.0}, r"synthetic: data.p_fast must be in \[0.0, 1.0\], got 2.0"),
        ("synthetic", {"s_fast": float("nan")}, "synthetic: data.s_fast must be a finite number, got nan"),
        ("synthetic", {"num_classes": 1}, "synthetic: data.num_classes must be >= 2"),
        ("mfeat", {"views": ["pix", "abc"]}, r"mfeat: unknown view\(s\) \['abc'\] in data.views"),
        ("mfeat", {"n_train": 1900, "n_val": 100}, r"data.n_train \+ data.n_val \+ data.n_test = 2400"),
    ):
        with pytest.raises(DatasetError, match=message):
            probe_dataset(name, **kw)
    # names are the registry's to check, as everywhere else
    with pytest.raises(ConfigError, match=r"dataset 'smnist' does not take data.bogus; it takes"):
        probe_dataset("smnist", bogus=1)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        probe_dataset("nope")


def test_registry_metadata_known_without_building() -> None:
    for name in list_datasets():
        info = dataset_info(name)
        assert info is not None, name
        check_metric(info.default_metric, info.task)
    mm = dataset_info("mmimdb")
    assert (mm.task, mm.modalities, mm.default_metric, mm.num_classes, mm.file_based) == (
        "multilabel",
        ("text", "image"),
        "f1_micro",
        23,
        True,
    )
    assert dataset_info("cremad").modalities == ("audio", "video") and dataset_info("cremad").num_classes == 6
    assert dataset_info("luma").num_classes == 22 and dataset_info("smnist").task == "multiclass"
    assert not dataset_info("synthetic").file_based and not dataset_info("mfeat").file_based
    with pytest.raises(ConfigError):
        check_metric("f1_micro", dataset_info("smnist").task)  # the search can refuse this before Ray


# --- 3. strict data in prepare ----------------------------------------------------------------------


def test_float_labels_are_refused_naming_the_file_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(write_smnist(tmp_path / "s")["data_root"])
    labels = np.load(root / "labels_train.npy").astype(np.float64)
    labels[3] = 3.7
    np.save(root / "labels_train.npy", labels)
    sets = ["--set", "n_train=30", "--set", "n_val=10", "--set", "n_test=10"]
    assert main(["prepare", "--dataset", "smnist", "--data-root", str(root), "--quiet", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: smnist: labels in {root / 'labels_train.npy'} are not whole numbers (row 3 is 3.7)"
    assert not list((root / ".miles_cache").glob("smnist-*"))  # nothing half-written
    np.save(root / "labels_train.npy", np.eye(10, dtype=np.float32)[labels.astype(int) % 10] * 0.9)
    with pytest.raises(DatasetError, match=r"labels in .*labels_train.npy are not one-hot rows \(row 0 is"):
        create_dataset("smnist", data_root=str(root), **SMNIST, progress=False)


def test_nan_and_inf_features_are_refused_naming_the_file_and_row(tmp_path: Path) -> None:
    root = Path(write_smnist(tmp_path / "s", image_dtype="float32")["data_root"])
    audio = np.load(root / "data_sp_train.npy")
    audio[:, 100] = np.nan  # every row: the first sample decoded is refused
    np.save(root / "data_sp_train.npy", audio)
    with pytest.raises(DatasetError) as info:
        create_dataset("smnist", data_root=str(root), **SMNIST, progress=False)
    text = one_line(info.value)
    row = text.split("of sample train/")[1].split(" ")[0]
    assert text.startswith(
        f"smnist: NaN in the audio of sample train/{row} (row {row} of {root}/data_sp_train.npy)"
    )
    np.save(root / "data_sp_train.npy", np.nan_to_num(audio))
    image = np.load(root / "data_wr_test.npy")
    image[:, 5] = np.inf
    np.save(root / "data_wr_test.npy", image)
    refused = r"smnist: infinite values in the image of sample test/\d+ \(row \d+ of .*data_wr_test.npy\)"
    with pytest.raises(DatasetError, match=refused):
        create_dataset("smnist", data_root=str(root), **SMNIST, progress=False)
    with pytest.raises(DatasetError, match="infinite values in the image"):  # the raw path too
        create_dataset("smnist", data_root=str(root), **SMNIST, cache=False).test.get_batch([0])


def test_the_writer_refuses_fractional_values_for_an_integer_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miles_tune.data.smnist import SMnist

    original = SMnist.decode_batch

    def fractional_labels(self, ids):  # a loader bug or a format this code did not foresee
        arrays = original(self, ids)
        return {**arrays, "label": arrays["label"] + 0.25}

    monkeypatch.setattr(SMnist, "decode_batch", fractional_labels)
    root = Path(write_smnist(tmp_path / "s")["data_root"])
    with pytest.raises(DatasetError) as info:
        create_dataset("smnist", data_root=str(root), **SMNIST, progress=False)
    assert one_line(info.value).startswith("smnist: the label of sample train/")
    assert "is not a whole number" in str(info.value) and f"of {root}/labels_train.npy)" in str(info.value)


def test_nan_in_a_float_wav_is_refused_naming_the_wav(tmp_path: Path) -> None:
    from scipy.io import wavfile

    root = Path(write_cremad(tmp_path / "c", per_class=2, broken=False)["data_root"])
    wav = sorted((root / "AudioWAV").glob("*.wav"))[2]
    samples = np.full(8000, 0.1, np.float32)
    samples[100] = np.nan
    wavfile.write(wav, 16000, samples)
    with pytest.raises(DatasetError, match=f"cremad: NaN in the audio of sample {wav.stem} \\({wav}\\)"):
        build("cremad", data_root=str(root), audio_size=16, image_size=16, progress=False)


def test_hdf5_genres_must_be_zero_or_one(tmp_path: Path) -> None:
    kw = write_mmimdb_hdf5(tmp_path / "h")
    with h5py.File(Path(kw["data_root"]) / "multimodal_imdb.hdf5", "r+") as f:
        f["genres"][2, 5] = 3
    with pytest.raises(DatasetError, match=r"genres in .*multimodal_imdb.hdf5 are not 0/1 \(row 2 is"):
        create_dataset("mmimdb", **kw, image_size=24, resize=28)


def test_mfeat_refuses_float_labels_and_nan_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from miles_tune.data import mfeat

    folder = tmp_path / "UCImultifeature"
    shutil.copytree(mfeat.mfeat_dir(), folder)
    monkeypatch.setattr(mfeat, "mfeat_dir", lambda: folder)
    lines = (folder / "mfeat-fou.csv").read_text().splitlines()
    good = list(lines)
    cells = lines[4].split(",")
    label = f"{float(cells[-1]) + 0.7:g}"  # truncates to the right digit: the old code accepted it
    lines[4] = ",".join([*cells[:-1], label])
    (folder / "mfeat-fou.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError, match=rf"labels in .*mfeat-fou.csv are not whole numbers in 0..9 \(line 5 has {label}\)"
    ):
        create_dataset("mfeat")
    lines = list(good)
    lines[6] = ",".join(["nan", *lines[6].split(",")[1:]])
    (folder / "mfeat-fou.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"mfeat-fou.csv has a NaN or infinite feature on line 7"):
        create_dataset("mfeat")


def test_synthetic_refuses_non_finite_strengths() -> None:
    with pytest.raises(DatasetError, match="synthetic: data.g_slow must be a finite number, got inf"):
        create_dataset("synthetic", g_slow=float("inf"))


# --- 4. messages name data.<option> -----------------------------------------------------------------


def test_size_and_option_messages_name_the_setting(tmp_path: Path) -> None:
    kw = write_smnist(tmp_path / "s")
    with pytest.raises(DatasetError) as info:
        create_dataset("smnist", **kw, n_train=10000, n_val=2000)
    assert one_line(info.value).startswith(
        f"smnist: data.n_train + data.n_val = 12000 exceeds the 80 rows of {tmp_path}/s/data_wr_train.npy"
    )
    with pytest.raises(DatasetError, match=r"smnist: data.n_test = 31 exceeds the 30 rows"):
        create_dataset("smnist", **kw, n_train=10, n_val=10, n_test=31)
    cremad = write_cremad(tmp_path / "c", per_class=1, broken=False)
    luma = write_luma(tmp_path / "l")
    mmimdb = write_mmimdb(tmp_path / "m", n=4)
    smnist = kw
    for name, options, message in (
        ("smnist", {**smnist, "n_val": 0}, "smnist: data.n_val must be >= 1, got 0"),
        ("cremad", {**cremad, "video": "avi"}, "cremad: data.video must be one of 'auto', 'flv', 'frames'"),
        ("cremad", {**cremad, "fractions": [0.5, 0.5]}, "cremad: data.fractions must be three numbers"),
        ("cremad", {**cremad, "noverlap": 600}, r"cremad: data.noverlap \(600\) must be below data.nperseg"),
        ("luma", {**luma, "classes": ["man", "mna"]}, r"luma: data.classes has names that are not LUMA"),
        ("luma", {**luma, "n_val": 10, "n_test": 5}, r"luma: data.n_val \+ data.n_test = 15 leaves no"),
        ("mmimdb", {**mmimdb, "resize": 8}, r"mmimdb: data.resize \(8\) must be >= data.image_size \(224\)"),
        (
            "mmimdb",
            {**mmimdb, "text_pooling": "max"},
            "mmimdb: data.text_pooling must be one of 'cls', 'mean'",
        ),
    ):
        with pytest.raises(DatasetError, match=message) as info:
            probe_dataset(name, **options)  # the probe and the build raise the same error
        one_line(info.value)
        with pytest.raises(DatasetError, match=message):
            create_dataset(name, **options)
