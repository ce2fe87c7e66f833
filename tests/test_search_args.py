"""Bad arguments and bad search spaces are refused before Ray starts; every shipped space runs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from miles_tune.balance import METHODS
from miles_tune.errors import ConfigError
from miles_tune.search import main, plan_search
from miles_tune.spaces import SearchSpaceError, list_search_spaces, load_search_space, trial_config
from miles_tune.train import Trainer


def ray_started() -> bool:
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "no search space 'nope'"),
        (["--method", "ogm-magic"], "no search space for method 'ogm-magic'"),
        (["--num-samples", "0"], "num-samples"),
        (["--gpus-per-trial", "1.5"], "gpus-per-trial"),
        (["--cpus-per-trial", "0"], "cpus-per-trial"),
        (["--set", "method_args.mu=0"], "mu"),
        (["--set", "epochs=-1"], "epochs"),
        (["--set", "learning_rate=0.1"], "learning_rate"),
        (["--set", "data.n_trian=10"], "n_trian"),
        (["--resume", "--name", "never-ran"], "nothing to restore|no search"),
    ],
)
def test_bad_arguments_are_refused_before_ray_starts(tmp_path, capsys, args, message) -> None:
    code = main(["--storage", str(tmp_path / "ray"), "--no-tracking", *args])
    err = capsys.readouterr().err
    if "--resume" in args:  # restore is checked once Ray is up, but still before any trial
        assert code == 2 and "nothing to restore" in err
        return
    assert code == 2
    assert re.search(message, err), err
    assert not ray_started()


def write_space(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(load_search_space("synthetic").path.read_text())
    raw = copy.deepcopy(raw)
    mutate(raw)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _set(path: str, value):
    def mutate(raw):
        *parents, last = path.split(".")
        node = raw
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return mutate


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set("bogus", 1), r"top level: unknown key\(s\) \['bogus'\]"),
        (_set("dataset", "imaginary"), "unknown dataset 'imaginary'"),
        (_set("data.colour", "red"), "does not take data.colour"),
        (_set("train.epoch", 3), r"train: unknown setting\(s\) \['epoch'\]"),
        (_set("train.metric", KeyError), "train.metric: missing"),
        (_set("methods.miles.space.tau", {"uniform": [0.5, 0.1]}), "methods.miles.space.tau: .*increasing"),
        (_set("methods.miles.space.tau", {"uniform": [-0.1, 0.5]}), "methods.miles.space.tau: MILES: tau"),
        (_set("methods.miles.space.mu", {"uniform": [0.0, 1.0]}), "methods.miles.space.mu: MILES: mu"),
        (_set("methods.miles.space.mu", {"normal": [0.5, 0.1]}), "unknown distribution 'normal'"),
        (_set("methods.miles.space.lr", {"loguniform": [0, 0.1]}), "positive lower bound"),
        (
            _set("methods.miles.space.gamma", {"uniform": [0, 1]}),
            "neither a training setting nor an argument o",
        ),
        (
            _set("methods.miles.points", [{"lr": 1e-3, "tau": 0.9, "mu": 0.5}]),
            r"points\[0\]: \['tau'\] outsid",
        ),
        (_set("methods.miles.points", [{"lr": 1e-3}]), r"points\[0\]: lacks"),
        (_set("methods.miles.fixed", {"variant": "strict"}), "methods.miles.fixed: MILES: variant"),
        (_set("methods.teleport", {"space": {}}), "methods.teleport: unknown balancing method"),
        (_set("resources.gpus_per_trial", 1.5), "fractions are allowed only below 1"),
    ],
)
def test_bad_search_spaces_are_refused_naming_the_key(tmp_path, capsys, mutate, message) -> None:
    path = write_space(tmp_path, mutate)
    with pytest.raises(SearchSpaceError, match=message) as info:
        load_search_space(path)
    assert str(path) in str(info.value)
    assert main(["--space", str(path), "--no-tracking", "--storage", str(tmp_path / "ray")]) == 2
    assert str(path) in capsys.readouterr().err
    assert not ray_started()


def test_invalid_yaml_is_refused(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("methods: [unclosed")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_search_space(path)


@pytest.mark.parametrize("name", list_search_spaces())
def test_every_shipped_space_runs_each_method_on_cpu(name: str, tmp_path) -> None:
    """Each method of each shipped space trains one epoch at its first point, on the dataset's
    fixture in its published format (tiny encoders; no Ray)."""
    import dataclasses

    from fixtures_data import SMOKE

    space = load_search_space(name)
    data_args, encoders = SMOKE[space.dataset](tmp_path)
    data_set = [a for k, v in data_args.items() for a in ("--set", f"data.{k}={json.dumps(v)}")]
    for method, ms in space.methods.items():
        # the shipped unimodal rates and teachers are placeholders, refused unless forced (test below)
        force = [
            a
            for k, v in METHODS.get(method).until_unimodal.items()
            for a in ("--set", f"{k}={json.dumps(v)}")
        ]
        plan = plan_search(
            [
                "--dataset",
                name,
                "--method",
                method,
                "--no-tracking",
                "--storage",
                str(tmp_path),
                *data_set,
                *force,
            ]
        )
        point = ms.points[0] if ms.points else {k: p.candidates()[0] for k, p in ms.params.items()}
        cfg = trial_config(plan.base, point)
        cfg = dataclasses.replace(
            cfg, data={**cfg.data, **data_args}, encoders=encoders, epochs=1, batch_size=16, device="cpu"
        )
        records = list(Trainer(cfg).run())
        assert len(records) == 1, (name, method)


@pytest.mark.parametrize("method", ["mslr-k", "mslr-s", "mslr-d"])
def test_mslr_refuses_placeholder_rates_before_ray(method: str, tmp_path) -> None:
    """Equal per-modality rates from a YAML (mfeat's space ships placeholders) are refused
    before Ray starts; unequal rates, rates from unimodal searches' files, or the force flag run."""
    from fixtures_data import SMOKE

    data_args, _ = SMOKE["mfeat"](tmp_path)
    data_set = [a for k, v in data_args.items() for a in ("--set", f"data.{k}={json.dumps(v)}")]
    argv = ["--dataset", "mfeat", "--method", method, "--no-tracking", "--storage", str(tmp_path), *data_set]
    with pytest.raises(ConfigError, match=rf"{method}: unimodal_lrs are the same for every modality.*"
                       "allow_placeholder_lrs"):  # fmt: skip
        plan_search(argv)
    plan_search([*argv, "--set", "allow_placeholder_lrs=true"])
    plan_search([*argv, "--set", "unimodal_lrs={pix: 0.002, fou: 0.001}"])  # not equal
    for m, lr in (("pix", 0.003), ("fou", 0.003)):  # equal, but each from a unimodal search
        config = {"dataset": "mfeat", "method": "unimodal", "lr": lr, "method_args": {"modality": m}}
        (tmp_path / f"{m}.yaml").write_text(yaml.safe_dump({"config": config}))
    lrs = {m: str(tmp_path / f"{m}.yaml") for m in ("pix", "fou")}
    plan = plan_search([*argv, "--set", f"unimodal_lrs={json.dumps(lrs)}"])
    assert plan.base["method_args"]["unimodal_lrs"] == lrs


def test_relative_data_root_is_made_absolute(tmp_path, monkeypatch) -> None:
    from fixtures_data import write_cremad

    write_cremad(tmp_path / "some" / "where", per_class=2)
    monkeypatch.chdir(tmp_path)
    plan = plan_search(["--dataset", "cremad", "--no-tracking", "--set", "data.data_root=some/where"])
    assert plan.base["data"]["data_root"] == str(tmp_path / "some" / "where")


def test_set_fixes_a_searched_parameter(tmp_path) -> None:
    plan = plan_search(
        ["--no-tracking", "--storage", str(tmp_path), "--set", "method_args.tau=0.1", "--set", "lr=0.002"]
    )
    assert set(plan.space.method("miles").params) == {"mu"}
    assert plan.base["method_args"]["tau"] == 0.1 and plan.base["lr"] == 0.002
    assert plan.space.method("miles").points == [{"mu": 0.5}, {"mu": 0.1}]


def test_the_builtin_space_covers_every_registered_method() -> None:
    from miles_tune.balance import list_methods

    assert set(load_search_space("synthetic").methods) == set(list_methods())


def test_storage_join_keeps_a_uri_query_at_the_end() -> None:
    from miles_tune.search import storage_join

    assert storage_join("/data/ray/", "s1") == "/data/ray/s1"
    assert storage_join("s3://b/p?endpoint_override=h:9&scheme=http", "s1") == (
        "s3://b/p/s1?endpoint_override=h:9&scheme=http"
    )


def test_a_folder_named_like_a_dataset_does_not_hide_its_space(tmp_path, monkeypatch) -> None:
    (tmp_path / "smnist").mkdir()  # e.g. the dataset's files, next to where the search is started
    monkeypatch.chdir(tmp_path)
    assert load_search_space("smnist").path == load_search_space("synthetic").path.parent / "smnist.yaml"
