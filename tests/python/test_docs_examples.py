"""Every ```python example in the README and the Python docs runs as written (each in its own
interpreter, from a scratch folder, so that files an example writes stay out of the repository).
A block that is not meant to run on its own starts with the comment `# not run`."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import dynascope

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "python.md"] + sorted((ROOT / "docs" / "python").glob("*.md"))


def _examples():
    for page in PAGES:
        text = page.read_text()
        for i, m in enumerate(re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)):
            code = m.group(1)
            if not code.lstrip().startswith("# not run"):
                yield pytest.param(code, id=f"{page.relative_to(ROOT)}#{i + 1}")


@pytest.mark.parametrize("code", list(_examples()))
def test_example_runs(code, tmp_path):
    pytest.importorskip("torch")
    if re.search(r"^\s*(import jax|from jax)", code, re.M):
        pytest.importorskip("jax")
    env = dict(os.environ)
    # The dynascope this test imported (the build's or an installed one), whatever the folder.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(dynascope.__file__)))  # links unresolved
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH", "")] if p)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"the example failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
