"""Size figures of the code base: the longest functions, parameter counts, README length.

    python benchmarks/code_metrics.py [--rev HEAD] [--top 8]

Reads the library (workflow/unet_pipeline), scripts and benchmarks at a git
revision (default: the working tree) and prints the longest functions in lines
(def to last line, docstring included), the parameter count of every function
named predict_*/validate* or a method of TilePredictor, and the line count of
README.md. Used for the refactoring figures in the closing notes.
"""

import argparse
import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sources(rev: str | None) -> dict[str, str]:
    """Path -> text of the library's modules, at ``rev`` or in the working tree."""
    if rev is None:
        return {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "workflow" / "unet_pipeline").rglob("*.py")}
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "workflow/unet_pipeline"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        name: subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        for name in names
        if name.endswith(".py")
    }


def functions(path: str, text: str):
    """(qualified name, lines, parameters) of every function and method."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, ast.FunctionDef):
                    child.qualname = f"{node.name}.{child.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            arguments = node.args
            names = [
                a.arg
                for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs
                if a.arg not in ("self", "cls")
            ]
            names += [f"*{arguments.vararg.arg}"] if arguments.vararg else []
            names += [f"**{arguments.kwarg.arg}"] if arguments.kwarg else []
            name = getattr(node, "qualname", node.name)
            yield f"{Path(path).stem}.{name}", node.end_lineno - node.lineno + 1, names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="git revision (default: the working tree)")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    found = [f for path, text in sources(args.rev).items() for f in functions(path, text)]
    print(f"library functions: {len(found)}; longest:")
    for name, lines, _ in sorted(found, key=lambda f: -f[1])[: args.top]:
        print(f"  {lines:4d} lines  {name}")
    print("prediction and validation functions, parameters:")
    for name, _, params in sorted(found):
        short = name.split(".", 1)[1]
        if short.split(".")[-1].startswith(("predict_", "validat")) or short.startswith("TilePredictor."):
            print(f"  {len(params):3d}  {name}({', '.join(params)})")
    readme = (
        subprocess.run(
            ["git", "show", f"{args.rev}:README.md"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        if args.rev
        else (REPO / "README.md").read_text()
    )
    print(f"README.md: {len(readme.splitlines())} lines")


if __name__ == "__main__":
    main()
