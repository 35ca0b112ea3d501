"""Stage scripts import only what they use: the table and figure jobs start without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def modules_after_imports(script: str) -> set[str]:
    """sys.modules of a fresh interpreter after running the script's top-level imports."""
    tree = ast.parse((SCRIPTS / f"{script}.py").read_text())
    imports = "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
    program = f"import sys\n{imports}\nprint(' '.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", program], cwd=SCRIPTS, capture_output=True, text=True, check=True)
    return set(run.stdout.split())


@pytest.mark.parametrize("script", ["aggregate", "report", "gradcam_scores", "baselines"])
def test_report_stage_scripts_do_not_import_torch(script):
    loaded = modules_after_imports(script)
    assert not {"torch", "torchvision", "sklearn"} & loaded, sorted({"torch", "torchvision", "sklearn"} & loaded)
