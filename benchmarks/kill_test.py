"""Kill every stage of the tiny pipeline with SIGKILL at seeded random moments, rerun, compare every output.

    python benchmarks/kill_test.py --kills 5 --seed 0 [--stages ingest,train] [--workdir DIR]

1. The tiny configuration of ``.test/config/config.yaml`` runs once uninterrupted, on 3 ISBI sections cropped to
   128 x 128, the training set downloaded over a loopback HTTP server (so the download stage runs too).
2. For each stage (rule) and each of ``--kills`` moments: a copy of that finished run reruns the stage
   (``--forcerun RULE --until RULE``); once the stage's job has started, the whole run (Snakemake and its jobs)
   is killed with SIGKILL after a seeded random delay within 80 % of the stage's own time in step 1, as a lost
   node would be. Then ``snakemake --unlock`` and the same command with ``--rerun-incomplete`` finish it (the forced
   stage's outputs were deleted by the killed run, and nothing later needs them, so a plain rerun would not
   make them again). Later stages need not run again:
   they read nothing but the stage's outputs, which must come out the same.
3. Every output file (logs and Snakemake's benchmark records aside, which record times) must equal the
   uninterrupted run's byte for byte, and no temporary may be left (``.tmp-``, ``.download-``, ``.partial``,
   ``.lock``, ``.done-``).

Prints stages x kills, where each kill landed, and the number of differences; exits 1 if any.
A ``--control`` run reruns every stage without a kill first: outputs that differ there are not deterministic to
begin with, and are listed apart.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UNET_SHARED_DATA", REPO.parent / "shared" / "data" / "isbi2012"))
TEMPORARY_MARKS = (".tmp-", ".download-", ".partial", ".lock", ".done-")
NOT_OUTPUTS = ("logs", "benchmarks")  # records of each run's times


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def prepare(workdir: Path) -> Path:
    """The tiny data and config in ``workdir``; returns the run folder."""
    data = workdir / "data"
    data.mkdir(parents=True)
    for name in ("train-volume.tif", "train-labels.tif", "test-volume.tif"):
        volume = tifffile.imread(SHARED / name)[:3, :128, :128]
        tifffile.imwrite(data / name, np.ascontiguousarray(volume), photometric="minisblack")
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    # A measured tile size (input_size null) is a timing, different from run to run by design; it changes the
    # prediction's recorded settings, not its pixels (unet_pipeline/inference/tile_choice.py). Pinned here so
    # that outputs compare byte for byte.
    config["prediction"]["input_size"] = config["presets"]["tiny"]["input_size"]
    config["datasets"]["tiny"]["base"] = serve(data)
    config["datasets"]["tiny_test"]["base"] = str(data)
    run = workdir / "baseline"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def snakemake(run: Path, *args: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "all",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(run),
    ]
    command += ["--cores", "2", *args, "--configfile", "config.yaml"]
    return subprocess.Popen(command, cwd=run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finish(run: Path, *args: str) -> None:
    process = snakemake(run, *args)
    output = process.communicate()[0].decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"snakemake failed in {run}:\n{output[-4000:]}")


def stage_times(run: Path) -> dict[str, float]:
    """Each rule's longest job in the run, from Snakemake's benchmark records (seconds)."""
    times: dict[str, float] = {}
    for record in (run / "results" / "benchmarks").glob("*/*.tsv"):
        seconds = float(record.read_text().splitlines()[1].split("\t")[0])
        times[record.parent.name] = max(times.get(record.parent.name, 0.0), seconds)
    return times


def job_started(run: Path, script: str) -> bool:
    """Whether a job running ``script`` runs now in ``run``: Snakemake starts it as .snakemake/scripts/tmpXXX.NAME.py."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if ".snakemake/scripts/" in command and cwd.startswith(str(run)) and _script_name(command) == script:
            return True
    return False


def _script_name(command: str) -> str | None:
    """The script a running job executes (tmpXXX.NAME.py -> NAME), or None for another process."""
    for part in command.split("\0"):
        if "/.snakemake/scripts/" in part:
            return Path(part).name.split(".", 1)[1].removesuffix(".py")
    return None


SCRIPT_OF_RULE = {}  # rules that share a script: filled from workflow/rules/*.smk


def script_of(rule: str) -> str:
    if not SCRIPT_OF_RULE:
        for rules in (REPO / "workflow" / "rules").glob("*.smk"):
            current = None
            for line in rules.read_text().splitlines():
                words = line.split()
                if words[:1] in (["rule"], ["checkpoint"]):
                    current = words[1].rstrip(":")
                elif current and '"../../scripts/' in line:
                    SCRIPT_OF_RULE[current] = line.split("scripts/")[1].split(".py")[0]
    return SCRIPT_OF_RULE.get(rule, rule)


def kill_once(baseline: Path, trial: Path, rule: str, delay: float) -> str:
    """Copy the finished run, rerun ``rule`` onwards, kill everything ``delay`` s after its job started, finish."""
    shutil.copytree(baseline, trial, symlinks=True)
    process = snakemake(trial, "--forcerun", rule, "--until", rule)
    started = time.monotonic()
    while not job_started(trial, script_of(rule)) and process.poll() is None and time.monotonic() - started < 600:
        time.sleep(0.02)
    if process.poll() is not None:
        raise SystemExit(f"{rule}: the run ended before its job started:\n{process.communicate()[0].decode()[-2000:]}")
    time.sleep(delay)
    landed = "in the job" if job_started(trial, script_of(rule)) else "after the job"
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        landed = "after the run"
    process.wait()
    finish(trial, "--unlock")  # what a user does after a lost node: Snakemake's own lock outlived it
    finish(trial, "--rerun-incomplete", "--forcerun", rule, "--until", rule)  # the same command again
    return landed


def outputs(run: Path) -> dict[str, bytes]:
    results = run / "results"
    return {
        str(path.relative_to(results)): path.read_bytes()
        for path in sorted(results.rglob("*"))
        if path.is_file() and path.relative_to(results).parts[0] not in NOT_OUTPUTS
    }


def temporaries(run: Path) -> list[str]:
    return [str(p.relative_to(run)) for p in (run / "results").rglob("*") if any(m in p.name for m in TEMPORARY_MARKS)]


def compare(expected: dict, run: Path, unstable: set) -> list[str]:
    actual = outputs(run)
    differences = [f"missing {name}" for name in expected if name not in actual]
    differences += [f"extra {name}" for name in actual if name not in expected]
    differences += [f"differs {n}" for n in expected if n in actual and actual[n] != expected[n] and n not in unstable]
    return differences + [f"temporary {name}" for name in temporaries(run)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", help="comma-separated rules (default: every rule of the run)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--control", action="store_true", help="rerun everything once without a kill first")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kill_test."))
    baseline = prepare(workdir)
    started = time.monotonic()
    finish(baseline)
    times = stage_times(baseline)
    print(f"uninterrupted run: {time.monotonic() - started:.0f} s; stage times (s): {times}", flush=True)
    expected, unstable = outputs(baseline), set()
    if args.control:
        control = workdir / "control"
        shutil.copytree(baseline, control, symlinks=True)
        finish(control, "--forceall")
        unstable = {line.split(" ", 1)[1] for line in compare(expected, control, set()) if line.startswith("differs")}
        print(f"control rerun without kills: {len(unstable)} outputs differ: {sorted(unstable)}", flush=True)
    rng = random.Random(args.seed)
    stages = args.stages.split(",") if args.stages else sorted(times)
    total = 0
    print(f"{'stage':24} kill  delay_s  landed         differences")
    for rule in stages:
        for kill in range(args.kills):
            delay = rng.uniform(0, 0.8 * times[rule])  # the forced rerun's job can be quicker than the first
            trial = workdir / f"{rule}.{kill}"
            landed = kill_once(baseline, trial, rule, delay)
            differences = compare(expected, trial, unstable)
            total += len(differences)
            print(f"{rule:24} {kill:4}  {delay:7.2f}  {landed:13}  {len(differences)} {differences[:3]}", flush=True)
            shutil.rmtree(trial)
    print(f"stages x kills: {len(stages)} x {args.kills} = {len(stages) * args.kills}; differences: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
