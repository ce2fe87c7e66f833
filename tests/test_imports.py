from __future__ import annotations

import subprocess
import sys

HEAVY = ("ray", "mlflow", "transformers", "torchvision", "torchaudio", "optuna")


def test_core_imports_no_heavy_packages() -> None:
    code = (
        "import sys, miles_tune, miles_tune.train, miles_tune.balance, miles_tune.data, miles_tune.models\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
