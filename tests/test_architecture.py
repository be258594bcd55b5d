"""The parts meet only through core: edge and control never import each other, the shims are
the DeepLens emulation built on core, and core stands on third-party packages alone."""
import ast

import pytest

from conftest import REPO

SHIMS = {"shims", "awscam", "mo", "greengrasssdk"}  # the DeepLens names are packages under shims/
PARTS = {"core", "edge", "control"} | SHIMS
ALLOWED = {
    "core": {"core"},
    "edge": {"core", "edge"} | SHIMS,
    "control": {"core", "control"},
    "shims": {"core"} | SHIMS,
}


def project_imports(folder):
    """{(file, imported top-level project package)} for every absolute import under `folder`."""
    found = set()
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            found |= {(str(path.relative_to(REPO)), name.split(".")[0]) for name in names
                      if name.split(".")[0] in PARTS}
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(part):
    wrong = sorted((file, name) for file, name in project_imports(part) if name not in ALLOWED[part])
    assert not wrong, f"{part} may import only {sorted(ALLOWED[part])}: {wrong}"


def test_the_check_sees_imports():
    """The rule above is not vacuous: edge and control both use core, edge uses the shims' cameras."""
    assert ("edge/runtime.py", "core") in project_imports("edge")
    assert ("edge/runtime.py", "shims") in project_imports("edge")
    assert any(name == "core" for _, name in project_imports("control"))
