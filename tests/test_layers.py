"""The library's groups import only the groups below them (workflow/unet_pipeline/__init__.py lists them)."""

import ast

from helpers import REPO

LIBRARY = REPO / "workflow" / "unet_pipeline"
LAYERS = [
    {"core"},
    {"data"},
    {"models"},
    {"transforms"},
    {"metrics", "inference"},
    {"training", "segmentation"},
    {"stages"},
]
LAYER = {group: index for index, groups in enumerate(LAYERS) for group in groups}


def imported_groups(path):
    """(line, group) of every library group a module imports (relative imports: the library's own)."""
    parts = path.relative_to(LIBRARY).parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            package = list(parts[:-1])[: len(parts) - node.level]
            target = package + (node.module.split(".") if node.module else [])
            if target:
                yield node.lineno, target[0]


def test_every_module_lives_in_a_group():
    assert sorted(path.name for path in LIBRARY.glob("*.py")) == ["__init__.py"]
    assert {path.name for path in LIBRARY.iterdir() if (path / "__init__.py").exists()} == set(LAYER)


def test_groups_import_only_the_groups_below_them():
    wrong = []
    for path in sorted(LIBRARY.rglob("*.py")):
        group = path.relative_to(LIBRARY).parts[0]
        if group == "__init__.py":
            continue
        for line, target in imported_groups(path):
            if target != group and LAYER[target] >= LAYER[group]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {group} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_group_packages_import_nothing_heavy():
    for path in LIBRARY.rglob("__init__.py"):
        if path.parent.name == "metrics":  # the scores' public names, re-exported from its own modules
            continue
        tree = ast.parse(path.read_text())
        assert not [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], path
