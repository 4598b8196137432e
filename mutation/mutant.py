"""Serve one module's mutated source in place of its file: the import side of a mutant.

The runner never writes a mutant into the checkout. A child that tests a mutant calls
``install(name, source_path)`` before it imports anything of the gateway: a finder first on
``sys.meta_path`` answers for that one module with a loader that compiles the mutated
source (read from a file outside the checkout) under the module's own file name, so
tracebacks and ``__file__`` read as usual and no ``.pyc`` of a mutant is ever written or
read. Every other module imports as always.

Tests that start a Python of their own (``subprocess.run([sys.executable, ...])``) get the
same mutant: ``environment()`` gives the variables that make ``sitecustomize.py`` in
``site_dir()`` call ``install_from_env()`` as that Python starts. This file is loaded there
by its path, so the child needs nothing of the checkout on ``sys.path``.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path
from types import CodeType

MODULE_VAR = "DATAMORPH_MUTANT_MODULE"  # the dotted name, e.g. datamorph_gateway.wire
SOURCE_VAR = "DATAMORPH_MUTANT_SOURCE"  # the file holding the mutated source

SITECUSTOMIZE = """\
# Written by mutation/run.py: a Python started by a test imports the mutant too.
import importlib.util as _u

_spec = _u.spec_from_file_location("_datamorph_mutant", {path!r})
_mutant = _u.module_from_spec(_spec)
_spec.loader.exec_module(_mutant)
_mutant.install_from_env()
"""


class MutantLoader(importlib.machinery.SourceFileLoader):
    """The module's own file name, the mutant's source; never a cached bytecode file."""

    def __init__(self, fullname: str, path: str, source: str) -> None:
        super().__init__(fullname, path)
        self.source = source

    def get_source(self, fullname: str) -> str:
        return self.source

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.source, self.path, "exec", dont_inherit=True)


class MutantFinder:
    """A meta path finder for one module name; every other name falls through."""

    def __init__(self, fullname: str, source: str) -> None:
        self.fullname = fullname
        self.source = source

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.fullname:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)  # type: ignore[arg-type]
        if spec is None or spec.origin is None:
            return None
        spec.loader = MutantLoader(fullname, spec.origin, self.source)
        spec.cached = None
        return spec


def install(fullname: str, source_path: str) -> None:
    """From now on, importing ``fullname`` runs the source in ``source_path``."""
    if fullname in sys.modules:
        raise RuntimeError(f"{fullname} is already imported: the mutant would not be used")
    sys.dont_write_bytecode = True
    sys.meta_path.insert(0, MutantFinder(fullname, Path(source_path).read_text()))


def install_from_env() -> None:
    fullname, source_path = os.environ.get(MODULE_VAR), os.environ.get(SOURCE_VAR)
    if fullname and source_path:
        install(fullname, source_path)


def environment(fullname: str, source_path: str, site: Path) -> dict[str, str]:
    """Variables for a child: its own subprocesses import the mutant as it does."""
    pythonpath = os.environ.get("PYTHONPATH")
    return {
        MODULE_VAR: fullname,
        SOURCE_VAR: source_path,
        "PYTHONPATH": f"{site}{os.pathsep}{pythonpath}" if pythonpath else str(site),
    }


def site_dir(directory: Path) -> Path:
    """A directory holding the ``sitecustomize.py`` that installs the mutant named by env."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE.format(path=__file__))
    return directory


def module_name(path: str, source_root: str = "server/src") -> str:
    """``server/src/datamorph_gateway/db/names.py`` → ``datamorph_gateway.db.names``."""
    relative = Path(path).relative_to(source_root).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)
