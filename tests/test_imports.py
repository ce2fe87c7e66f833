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


def component_imports() -> dict[str, set[str]]:
    """miles_tune's top-level components (``data``, ``train``, ``cli``, ...) and the components each
    imports anywhere in its code, lazy imports inside functions included."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "miles_tune"
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        component = parts[0]
        if component in ("__init__", "__main__"):
            continue
        edges = graph.setdefault(component, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("miles_tune."):
                    target = name.split(".")[1]
                    if target != component and path.name != "__main__.py":
                        edges.add(target)
    return graph


def test_imports_go_one_way() -> None:
    """No circle between components: each may import only what sits below it."""
    graph = component_imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "cli" in graph and "train" in graph["cli"] and "cli" not in graph["train"]


def test_a_search_without_mlflow_keeps_tune_from_importing_it() -> None:
    """Tune's usage stats import Ray's MLflow integration, which imports MLflow; a search with
    ``--no-tracking`` loads that module with MLflow hidden (``search.keep_mlflow_out_of_tune``).
    Ray's real callback count runs, MLflow stays out, and stays importable afterwards."""
    code = (
        "import sys\n"
        "from miles_tune.search import keep_mlflow_out_of_tune\n"
        "from ray.air._internal.usage import _count_callbacks\n"
        "from ray.tune import Callback\n"
        "keep_mlflow_out_of_tune()\n"
        "class Mine(Callback): pass\n"
        "counts = dict(_count_callbacks([Mine()]))\n"
        "print(counts, 'mlflow' in sys.modules)\n"
        "import mlflow\n"
        "print(mlflow.MlflowClient.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["{'CustomCallback': 1} False", "MlflowClient"]
