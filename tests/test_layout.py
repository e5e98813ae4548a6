"""The package stays readable: the loop is a short file that orders its stages, and no function is long."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "evomerge"


def test_the_loop_is_short_and_no_function_is_long():
    assert len((PACKAGE / "evolution.py").read_text().splitlines()) <= 300
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == [], "functions over 60 lines: " + ", ".join(long)


def test_reading_a_config_imports_no_torch():
    """Registries name their built-ins lazily and merge methods import torch only to compute, so that `--help` and
    config errors answer at once."""
    import subprocess
    import sys

    code = ("import sys; from evomerge.config import PipelineConfig; from evomerge.registry import CROSSOVERS, "
            "MUTATION_OPERATORS; [CROSSOVERS.get(n) for n in CROSSOVERS.names()]; "
            "[MUTATION_OPERATORS.get(n) for n in MUTATION_OPERATORS.names()]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
