"""How bad input is refused: each case's command, its exit code, its one-line message and the
seconds until the refusal (wall time of the whole command, Python start-up and imports included).

    python benchmarks/refusals.py            # writes benchmarks/results/refusals.json and prints a table

Every case here hung, crashed with a traceback, or was silently accepted before the hardening
issue; the tests check each one, this script only times them as a user would meet them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SEARCH = [sys.executable, "-m", "miles_tune.search"]
TRAIN = [sys.executable, "-m", "miles_tune.train"]
SMALL = ["--set", "data.n_train=64", "--set", "data.n_val=32", "--set", "data.n_test=32"]


def cases(tmp: Path) -> list[tuple[str, list[str], dict[str, str] | None]]:
    """(case, argv, extra environment). Files a case needs are written into ``tmp`` first."""
    import numpy as np
    import torch
    from fixtures_data import write_smnist

    search = [*SEARCH, "--storage", str(tmp / "ray"), "--results", str(tmp / "runs"), "--no-tracking"]
    # a crafted checkpoint: a real trainer state whose method state would run `touch` when unpickled
    run = tmp / "run"
    subprocess.run(
        [*TRAIN, "--epochs", "1", "--quiet", "--out", str(run), *SMALL], check=True, capture_output=True
    )
    state = torch.load(run / "checkpoint.pt", weights_only=True)

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    state["method"]["x"] = RunsCode()
    torch.save(state, run / "checkpoint.pt")
    # a small S-MNIST copy in its published layout, and one with a float label
    small = tmp / "smnist"
    write_smnist(small, n_train=40, n_test=20)
    floats = tmp / "smnist-float"
    write_smnist(floats, n_train=40, n_test=20)
    labels = np.load(floats / "labels_train.npy")
    np.save(floats / "labels_train.npy", labels.astype(np.float64) + (np.arange(len(labels)) == 3) * 0.7)
    # a search space that searches an integer setting with a continuous distribution
    space = (ROOT / "search_spaces" / "synthetic.yaml").read_text()
    (tmp / "uniform_batch.yaml").write_text(
        space.replace(
            "      lr: {loguniform: [1.0e-4, 1.0e-2]}",
            "      lr: {loguniform: [1.0e-4, 1.0e-2]}\n      batch_size: {uniform: [32, 256]}",
            1,
        )
    )
    (tmp / "list_sections.yaml").write_text("dataset: [synthetic]\nmethods: [miles]\n")
    return [
        (
            "crafted checkpoint on --resume",
            [*TRAIN, "--resume", "--out", str(run), "--epochs", "2", *SMALL],
            None,
        ),
        ("--name /abs/x", [*search, "--name", "/abs/x"], None),
        ("--name ../x", [*search, "--name", "../x"], None),
        ('--name "it\'s"', [*search, "--name", "it's"], None),
        ("--gpus-per-trial nan", [*search, "--gpus-per-trial", "nan"], None),
        ("--cpus-per-trial nan", [*search, "--cpus-per-trial", "nan"], None),
        ("--cpus-per-trial 64 on this machine", [*search, "--cpus-per-trial", "64", *SMALL], None),
        (
            "unreachable --tracking-uri",
            [*SEARCH, "--storage", str(tmp / "ray"), "--tracking-uri", "http://127.0.0.1:5999"],
            None,
        ),
        ("--resume --name typo", [*search, "--resume", "--name", "typo"], None),
        ("--set data.n_train=abc", [*search, "--set", "data.n_train=abc"], None),
        ("--set metric=f1_samples (multiclass data)", [*search, "--set", "metric=f1_samples"], None),
        ("uniform over batch_size", [*search, "--space", str(tmp / "uniform_batch.yaml")], None),
        ("space sections that are lists", [*search, "--space", str(tmp / "list_sections.yaml")], None),
        (
            "--dataset mmimdb, no data",
            [*search, "--dataset", "mmimdb"],
            {"MILES_TUNE_DATA": str(tmp / "none")},
        ),
        (
            "--dataset smnist, data_root missing",
            [*search, "--dataset", "smnist", "--set", "data.data_root=/nonexistent"],
            None,
        ),
        (
            "--dataset smnist, small copy",
            [*search, "--dataset", "smnist", "--set", f"data.data_root={small}"],
            None,
        ),
        (
            "prepare: a float label",
            [
                sys.executable,
                "-m",
                "miles_tune.data",
                "prepare",
                "--dataset",
                "smnist",
                "--data-root",
                str(floats),
                "--set",
                "n_train=30",
                "--set",
                "n_val=10",
                "--quiet",
            ],
            None,
        ),
        ("train --set weight_decay=abc", [*TRAIN, "--set", "weight_decay=abc"], None),
        ("train --set num_workers=abc", [*TRAIN, "--set", "num_workers=abc"], None),
        ("train --set momentum=abc", [*TRAIN, "--set", "momentum=abc"], None),
        ("train --set fusion_width=abc", [*TRAIN, "--set", "fusion_width=abc"], None),
        ("train --device nope", [*TRAIN, "--device", "nope"], None),
        ("train --set heads_with_encoders=maybe", [*TRAIN, "--set", "heads_with_encoders=maybe"], None),
        ("train --set lr=true", [*TRAIN, "--set", "lr=true"], None),
        ("train --lr 1e38", [*TRAIN, "--lr", "1e38", "--epochs", "1", "--quiet", *SMALL], None),
        ("train --out DIR (not empty)", [*TRAIN, "--out", str(run), "--epochs", "1", *SMALL], None),
    ]


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for case, argv, env in cases(tmp):
            started = time.monotonic()
            proc = subprocess.run(
                argv, capture_output=True, text=True, cwd=tmp, env={**os.environ, **(env or {})}, timeout=600
            )
            seconds = time.monotonic() - started
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("error:")]
            rows.append(
                {
                    "case": case,
                    "command": " ".join(
                        a if str(tmp) not in a else a.replace(str(tmp), "$TMP") for a in argv[1:]
                    ),
                    "exit": proc.returncode,
                    "seconds": round(seconds, 2),
                    "message": (errors or lines or [""])[-1][:300],
                    "traceback": "Traceback" in proc.stderr,
                }
            )
            print(f"{case:<45} exit {proc.returncode:>3}  {seconds:6.2f} s  {rows[-1]['message'][:120]}")
        rows.append({"case": "crafted checkpoint executed", "value": (tmp / "pwned").exists()})
    out = ROOT / "benchmarks" / "results" / "refusals.json"
    out.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
