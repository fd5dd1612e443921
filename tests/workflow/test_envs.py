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
    "PIL": "pillow",
    "elf": "python-elf",
    "bioimage_cpp": "bioimage-cpp",
}
LIBRARY = "unet_pipeline"


RULE_START = re.compile(r"^[ \t]*(?:rule|checkpoint)[ \t]+(\w+)[ \t]*:", re.MULTILINE)


USE_RULE = re.compile(r"^[ \t]*use[ \t]+rule[ \t]+(\w+)[ \t]+as[ \t]+(\w+)", re.MULTILINE)


def rule_blocks() -> list[tuple[str, str, Path]]:
    """(name, text, rule file) of every rule and checkpoint definition, indented ones (inside an if) included;
    a rule made by ``use rule BASE as NAME with:`` has its base's text (its env and script are the base's)."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]:
        text = smk.read_text()
        starts = list(RULE_START.finditer(text))
        for start, end in zip(starts, [*starts[1:], None]):
            block = text[start.start() : end.start() if end else len(text)]
            found.append((start.group(1), USE_RULE.split(block)[0], smk))
        bases = {name: (block, where) for name, block, where in found}
        found += [(name, *bases[base]) for base, name in USE_RULE.findall(text)]
    return found


def rules():
    """(rule name, env file, script file) of every rule definition with a script."""
    found = []
    for name, block, smk in rule_blocks():
        conda = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
        script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
        if script:
            found.append(
                (name, conda and (smk.parent / conda.group(1)).resolve(), (smk.parent / script.group(1)).resolve())
            )
    return found


def snakemake_rules(tmp_path: Path, shards: int) -> set:
    """The rules Snakemake itself lists for the shipped config with ``prediction.shards`` and
    ``segmentation.shards``."""
    import subprocess

    overlay = tmp_path / f"shards{shards}.yaml"
    overlay.write_text(f"prediction: {{shards: {shards}}}\nsegmentation: {{shards: {shards}}}\n")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--list-rules"]
    command += ["--configfile", str(REPO / "config" / "config.yaml"), str(overlay)]
    listed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    return {line.strip() for line in listed.splitlines() if re.fullmatch(r"\w+", line.strip())}


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


def dependencies(env_file: Path) -> list[str]:
    """The env's conda packages and its pip packages (``name==version``), as written."""
    listed = yaml.safe_load(env_file.read_text())["dependencies"]
    pip = [entry["pip"] for entry in listed if isinstance(entry, dict)]
    return [entry for entry in listed if isinstance(entry, str)] + [package for group in pip for package in group]


def declared_packages(env_file: Path) -> set:
    return {re.split(r"[=<>! ]", dependency)[0] for dependency in dependencies(env_file)}


RULES = rules()


@pytest.mark.workflow
def test_the_rule_finder_finds_every_rule_snakemake_knows(tmp_path):
    """Checkpoints and the indented predict and segment rules too: their envs are checked below."""
    listed = snakemake_rules(tmp_path, 1) | snakemake_rules(tmp_path, 2)
    assert {name for name, _, _ in rule_blocks()} == listed
    assert len(listed) == 18
    assert {"ingest", "predict_setup", "predict_shard", "segment_shard"} <= {name for name, _, _ in RULES}


def test_every_rule_with_a_script_has_an_env():
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
        for dependency in dependencies(env):
            package, _, version = dependency.partition("=")
            version = version.lstrip("=")
            if package in pinned:
                assert version == pinned[package], f"{env.name}: {package}={version}, tests run {pinned[package]}"
