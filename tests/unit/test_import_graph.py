""".ci/import_graph.py: cycles through imports inside functions, and the cap on such imports, fail lint."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "import_graph.py"
spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(spec)
sys.modules["import_graph"] = import_graph  # its dataclasses look their module up there
spec.loader.exec_module(import_graph)


def tree(root: Path, files: dict[str, str]) -> Path:
    for package in import_graph.PACKAGES:
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_a_cycle_hidden_by_an_import_inside_a_function_fails(tmp_path, capsys):
    root = tree(
        tmp_path,
        {
            "aligner/a.py": "from aligner.b import thing\n",
            "aligner/b.py": "thing = 1\n\ndef f():\n    # why: the test\n    from aligner import a\n",
        },
    )
    assert import_graph.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "aligner.a -> aligner.b -> aligner.a" in out
    assert "aligner/b.py:5  aligner.b -> aligner.a (inside a function)" in out


def test_relative_and_type_checking_imports(tmp_path, capsys):
    root = tree(
        tmp_path,
        {
            "serve/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from serve import y\n",
            "serve/y.py": "from . import x\n",
        },
    )
    assert import_graph.main([str(root)]) == 0, "an import under TYPE_CHECKING never runs: no cycle"
    assert "cycles among first-party modules (imports inside functions counted): 0" in capsys.readouterr().out


@pytest.mark.parametrize(("comment", "expected"), [("    # keeps torch off the CLI's path\n", 0), ("", 1)])
def test_an_import_inside_a_function_needs_a_comment_saying_why(tmp_path, comment, expected):
    root = tree(
        tmp_path,
        {
            "kernels/k.py": "def f():\n" + comment + "    import torch\n\n    from kernels import j\n",
            "kernels/j.py": "",
        },
    )
    assert import_graph.main([str(root)]) == expected


def test_the_number_of_imports_inside_functions_is_capped(tmp_path, capsys):
    body = "".join(f"def f{i}():\n    from aligner import m  # why: the test\n" for i in range(3))
    root = tree(tmp_path, {"aligner/m.py": "", "aligner/n.py": body})
    assert import_graph.main([str(root), "--limit", "4"]) == 0
    assert import_graph.main([str(root), "--limit", "3"]) == 1
    assert "first-party import statements inside functions: 3 (must be fewer than 3)" in capsys.readouterr().out


def test_from_a_package_import_a_submodule_depends_on_the_package(tmp_path, capsys):
    # `from aligner import b` runs aligner/__init__.py first, and that imports a again.
    root = tree(tmp_path, {"aligner/a.py": "from aligner import b\n", "aligner/b.py": ""})
    (root / "aligner" / "__init__.py").write_text("from aligner.a import b\n")
    assert import_graph.main([str(root)]) == 1
    assert "aligner -> aligner.a -> aligner" in capsys.readouterr().out
