"""The mutation runner (mutation/run.py, mutation/mutant.py): what makes its figures true.

A mutant must reach the tests (in the child and in any Python a test starts), a failure
must count as a kill and a hang as a timeout, and the checkout must never change. Each
check runs in a Python of its own: this process has imported the gateway already.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mutation import mutant
from mutation.modules import MODULES
from mutation.run import SERVER_FIXTURES, pick

ROOT = Path(__file__).resolve().parent.parent
WIRE = "server/src/datamorph_gateway/wire.py"


def python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("server/src/datamorph_gateway/wire.py", "datamorph_gateway.wire"),
        ("server/src/datamorph_gateway/db/decoding/oids.py", "datamorph_gateway.db.decoding.oids"),
        ("server/src/datamorph_gateway/auth/__init__.py", "datamorph_gateway.auth"),
    ],
)
def test_module_name(path: str, name: str) -> None:
    assert mutant.module_name(path) == name


def test_installed_mutant_is_what_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("VALUE = 42\n")
    out = python(
        "from mutation import mutant\n"
        f"mutant.install('datamorph_gateway.wire', {str(source)!r})\n"
        "import datamorph_gateway.wire as w, datamorph_gateway.status as s, json\n"
        "print(json.dumps([w.VALUE, w.__file__, hasattr(s, 'VALUE')]))\n"
    )
    # The mutant under the module's own file name; every other module as always.
    assert json.loads(out) == [42, str(ROOT / WIRE), False]


def test_a_python_started_by_a_test_imports_the_mutant_too(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("VALUE = 'mutant'\n")
    site = mutant.site_dir(tmp_path / "site")
    env = mutant.environment("datamorph_gateway.wire", str(source), site)
    code = "import datamorph_gateway.wire as w; print(getattr(w, 'VALUE', 'original'))"
    assert python(code, env) == "mutant"
    assert python(code) == "original"


def test_install_refuses_a_module_already_imported(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("")
    with pytest.raises(RuntimeError, match="already imported"):
        mutant.install("datamorph_gateway.wire", str(source))  # this process imported it


def test_failures_are_kills_hangs_are_timeouts_and_the_checkout_stays() -> None:
    before = (ROOT / WIRE).read_text()
    out = python(
        "import json\n"
        "from pathlib import Path\n"
        "from mutation import run\n"
        "from mutation.modules import MODULES\n"
        f"module = next(m for m in MODULES if m.path == {WIRE!r})\n"
        "run.preload(module)\n"
        f"original = Path({WIRE!r}).read_text()\n"
        "mutants = [\n"
        "    ('none', None),\n"
        "    ('same', original),\n"
        "    ('broken', run.BROKEN),\n"
        "    ('changed', original.replace('def ', 'def _', 1)),\n"
        "    ('hangs', 'import time\\ntime.sleep(60)\\n'),\n"
        "]\n"
        "outcomes = run.run_children(module, mutants, 2, 10.0)\n"
        "print(json.dumps(dict(outcomes)))\n"
    )
    assert json.loads(out) == {
        "none": "passed",
        "same": "passed",
        "broken": "failed",
        "changed": "failed",
        "hangs": "timeout",
    }
    assert (ROOT / WIRE).read_text() == before


def test_pick_is_one_module_per_commit_and_reaches_every_module() -> None:
    paths = {m.path for m in MODULES}
    commit = "0edf74e2" + "0" * 32
    assert pick(commit) == pick(commit) in paths
    picked = {pick(f"{n:012x}" + "0" * 28) for n in range(len(MODULES))}
    assert picked == paths


def test_server_fixtures_are_the_conftests() -> None:
    """The runner leaves out the tests that ask for these; a fixture added to
    tests/conftest.py must be added there too."""
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    fixtures = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }
    assert fixtures == SERVER_FIXTURES


@pytest.mark.slow
def test_every_module_without_a_server_passes_unmutated() -> None:
    """What `make mutate` checks first, for every module (those needing a PostgreSQL are
    left to the suite's run of their tests): a test file that gained a test asking a server
    once stopped the whole run at db/names.py."""
    out = python(
        "import json\n"
        "from mutation import run\n"
        "from mutation.modules import MODULES\n"
        "outcomes = {}\n"
        "for module in MODULES:\n"
        "    if not module.database:\n"
        "        run.preload(module)\n"
        "        outcomes[module.path] = run.run_alone(module, None, None)\n"
        "print(json.dumps(outcomes))\n"
    )
    outcomes = json.loads(out)
    assert outcomes == dict.fromkeys(outcomes, "passed")
    assert len(outcomes) >= len(MODULES) - sum(m.database for m in MODULES)
