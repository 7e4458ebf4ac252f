"""Building the DAG imports no ML framework: the Snakefile's own imports, run in a fresh interpreter
(the import contract sees every import, so it is told to ignore the one made only inside a job)."""

import re
import subprocess
import sys
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "workflow/rules"


def test_the_modules_the_snakefile_imports_load_no_torch():
    modules = sorted(
        {
            name
            for path in RULES.glob("*.smk")
            for name in re.findall(r"^from (exme[\w.]*) import", path.read_text(), re.M)
        }
    )
    assert "exme.pipeline.locations" in modules
    heavy = ["torch", "transformers", "lm_eval", "pandas", "matplotlib"]
    code = f"import sys\nimport {', '.join(modules)}\nprint([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
