"""Every rule runs in its own conda env, and that env declares every module the rule's code imports."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

# import name -> conda-forge package name, where they differ
CONDA_PACKAGE = {
    "skimage": "scikit-image",
    "torch": "pytorch",
    "yaml": "pyyaml",
    "dask": "dask-core",
    "matplotlib": "matplotlib-base",
    "bioimageio": "bioimageio.spec",
}
LIBRARY = "unet_pipeline"


def rules():
    """(rule name, env file, script file) of every rule with a script."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            name = block.split(":", 1)[0].strip()
            conda = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            if script:
                found.append(
                    (name, conda and (smk.parent / conda.group(1)).resolve(), (smk.parent / script.group(1)).resolve())
                )
    return found


def imported_modules(path: Path, seen: set) -> set:
    """Top-level modules imported by a file and, transitively, by the library modules it imports."""
    if path in seen:
        return set()
    seen.add(path)
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the library
                package = path.parents[node.level - 1]
                bases = [package / node.module.replace(".", "/")] if node.module else []
                bases += [package / a.name for a in node.names] if not node.module else []
                for base in bases:
                    for target in (base.with_suffix(".py"), base / "__init__.py"):
                        if target.exists():
                            modules |= imported_modules(target, seen)
                if node.module is None:
                    modules |= imported_modules(package / "__init__.py", seen)
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == LIBRARY:
                library_file = REPO / "workflow" / (name.replace(".", "/") + ".py")
                package_init = REPO / "workflow" / name.replace(".", "/") / "__init__.py"
                modules |= imported_modules(library_file if library_file.exists() else package_init, seen)
            elif top != "_library_path":
                modules.add(top)
    return modules


def declared_packages(env_file: Path) -> set:
    spec = yaml.safe_load(env_file.read_text())
    names = set()
    for dependency in spec["dependencies"]:
        if isinstance(dependency, str):
            names.add(re.split(r"[=<>! ]", dependency)[0])
    return names


RULES = rules()


def test_every_rule_with_a_script_has_an_env():
    assert len(RULES) >= 9
    for name, env, _ in RULES:
        assert env is not None and env.exists(), f"rule {name} has no conda env file"


@pytest.mark.parametrize("name, env, script", RULES, ids=[rule[0] for rule in RULES])
def test_env_declares_every_imported_module(name, env, script):
    modules = imported_modules(script, set()) - set(sys.stdlib_module_names)
    declared = declared_packages(env)
    missing = sorted(module for module in modules if CONDA_PACKAGE.get(module, module) not in declared)
    assert not missing, f"rule {name}: {env.name} lacks {missing}"
    assert "python" in declared


def test_env_versions_match_the_tested_requirements():
    pinned = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            package, version = line.split("==")
            pinned[CONDA_PACKAGE.get(package.strip().lower(), package.strip().lower())] = version.strip()
    for env in sorted((REPO / "envs").glob("*.yaml")):
        for dependency in yaml.safe_load(env.read_text())["dependencies"]:
            package, _, version = dependency.partition("=")
            if package in pinned:
                assert version == pinned[package], f"{env.name}: {package}={version}, tests run {pinned[package]}"
