"""wal/__init__.py and the layering rule.

What: every name in wal.__all__ exists; wal imports neither engine nor net.
How: import the package; parse every wal module with ast.
Could fail if: an export is renamed without __all__, or wal grows an upward import.
"""

import ast
from pathlib import Path

import wal

WAL_DIR = Path(wal.__file__).parent


def test_every_export_exists_and_the_list_is_sorted():
    assert sorted(wal.__all__) == wal.__all__
    assert len(set(wal.__all__)) == len(wal.__all__)
    for name in wal.__all__:
        assert hasattr(wal, name), name


def test_wal_imports_neither_engine_nor_net():
    for path in WAL_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"engine", "net"}, f"{path.name} imports {name}"
