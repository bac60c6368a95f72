"""``python -m recbole_rsir.study``: plan a study, run what is missing, rebuild its report.

Every run is a separate process (``study.worker``) with its own torch threads; up to
``--jobs`` run at once, each as soon as the runs it needs are finished. A finished run is
never redone: its results file under ``<out>/<dataset>/runs/`` is the proof, and the same
command started again carries on with what is missing (an interrupted run resumes from its
saved rounds in ``--work``). Each round a run finishes is published at once as its partial
results file, and the report is rebuilt from all results files there after every finished
round; with ``--commit`` the results folder is committed to git each time, so a study
accumulates across sittings even when a sitting ends inside a long run. Two study commands
may run side by side (one job each uses two cores best): a run one of them is running is
claimed in its work folder, and the other leaves it alone.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

from recbole_rsir.data.bundled import BUNDLED
from recbole_rsir.errors import InputError
from recbole_rsir.study.estimates import estimate, minutes, round_seconds, total_line
from recbole_rsir.study.plan import ARMS, DEFAULT_ARMS, OPERATOR_ARMS, plan
from recbole_rsir.study.report import build_report
from recbole_rsir.study.results import finished_rounds, load_runs, result_path
from recbole_rsir.study.summary import SUMMARY, write_summary
from recbole_rsir.study.worker import claim, publish_progress, release, run_dir
from recbole_rsir.utils import get_model


class StudyError(InputError):
    """A study argument outside what the study runs."""


def _list(text, kind, convert=str):
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise StudyError(f"--{kind} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise StudyError(f"--{kind} is empty")
    return values


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m recbole_rsir.study", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty", help="one or more, comma-separated")
    parser.add_argument("--models", default="SASRec")
    parser.add_argument("--seeds", default="2020,2021,2022")
    parser.add_argument("--rounds", default="3")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"comma-separated among {', '.join(ARMS)} (aug-<operator>: one of aug's)")
    parser.add_argument("--config_files", default="", help="space-separated yaml files for every run")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"), help="results root")
    parser.add_argument("--work", default="study_work", help="weights and saved rounds (not committed)")
    parser.add_argument("--jobs", default="2", help="runs at once")
    parser.add_argument("--threads", default="1", help="torch threads per run")
    parser.add_argument("--commit", action="store_true", help="git-commit the results after every run")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="publish the saved rounds of unfinished runs, rebuild the report, run nothing "
                             "(its runs are not added to the saved plan)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise StudyError(f"unknown argument {unknown[0]!r}")
    args.datasets = _list(args.dataset, "dataset")
    for name in args.datasets:
        if name not in BUNDLED and not os.path.isfile(os.path.join("dataset", name, f"{name}.inter")):
            raise StudyError(f"unknown dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    args.config_files = tuple(os.path.relpath(p) for p in args.config_files.split())  # results carry no machine path
    for path in args.config_files:
        if not os.path.isfile(path):
            raise StudyError(f"config file {path} does not exist")
    args.models = _list(args.models, "models")
    for name in args.models:
        get_model(name)
    args.seeds = _list(args.seeds, "seeds", int)
    args.arms = _list(args.arms, "arms")
    bad = [a for a in args.arms if a not in ARMS + OPERATOR_ARMS]
    if bad:
        raise StudyError(f"unknown arm {bad[0]!r}; known: {', '.join(ARMS + OPERATOR_ARMS)}")
    for key, low in (("rounds", 1), ("jobs", 1), ("threads", 1)):
        value = getattr(args, key)
        if not value.isdigit() or int(value) < low:
            raise StudyError(f"--{key} must be an integer >= {low}, got {value!r}")
        setattr(args, key, int(value))
    return args


# ---- plan and estimates ----------------------------------------------------------------

def done(out, run):
    return os.path.isfile(result_path(out, run))


def take(args, run):
    """Claim ``run`` for this process, or say why not: another study process holds it, or has
    finished it since this one made its plan (two lanes plan the same runs; running a finished
    run again would republish it with the seconds of a reload)."""
    folder = run_dir(args.work, run)
    if not claim(folder):
        return "another study process is running it"
    if done(args.out, run):
        release(folder)
        return "another study process has finished it"
    return None


def print_plan(runs, out, jobs):
    payloads = {d: load_runs(os.path.join(out, d)) for d in sorted({r.dataset for r in runs})}
    seconds = {d: round_seconds(p.values()) for d, p in payloads.items()}
    pending = [r for r in runs if not done(out, r)]
    known = [estimate(r, seconds[r.dataset], finished_rounds(payloads[r.dataset].get((r.model, r.arm, r.seed))))
             for r in pending]
    print(f"study plan: {len(runs)} runs, {len(runs) - len(pending)} done, {len(pending)} to run")
    for run, est in zip(pending, known):
        waits = [a for a in run.needs if not done(out, _sibling(run, a))]
        print(f"  {run.dataset:<24} {run.name:<40} {minutes(est):>17}"
              + (f"  after {', '.join(waits)}" if waits else ""))
    print(f"estimate: {total_line(known, jobs)}")


def _sibling(run, arm):
    return type(run)(run.dataset, run.model, arm, run.seed, 0)


# ---- running ---------------------------------------------------------------------------

def launch(run, args):
    folder = run_dir(args.work, run)
    os.makedirs(folder, exist_ok=True)
    spec = os.path.join(folder, "run.json")
    with open(spec, "w", encoding="utf-8") as f:
        json.dump({"run": run.as_dict(), "out": args.out, "work": args.work, "threads": args.threads}, f)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = open(os.path.join(folder, "study.log"), "a", encoding="utf-8")
    return subprocess.Popen([sys.executable, "-m", "recbole_rsir.study.worker", spec], stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def last_lines(path, n=3):
    """The last ``n`` non-blank lines of a run's log, to say why it failed where the failure is seen."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
        lines = f.read().decode("utf-8", "replace").replace("\r", "\n").splitlines()
    return [line.rstrip() for line in lines if line.strip()][-n:]


def commit(out, dataset, message):
    """Commit the dataset's results folder and the summary. The message names every run whose
    results file this commit adds: another study process's run may finish between its worker
    writing the file and its own commit."""
    folder, paths = os.path.join(out, dataset), [".", os.path.join("..", SUMMARY)]
    for _ in range(5):   # another study process may hold git's lock for a moment
        added = subprocess.run(["git", "-C", folder, "add", "--", *paths], capture_output=True)
        if added.returncode == 0:
            staged = subprocess.run(["git", "-C", folder, "diff", "--cached", "--name-only", "--no-renames",
                                     "--diff-filter=A", "--relative", "--", "runs"],
                                    capture_output=True, text=True).stdout.split()
            finished = [n for n in map(finished_name, staged) if n and not named_in(message, n)]
            text = message + "".join(f"; {n} finished" for n in finished)
            made = subprocess.run(["git", "-C", folder, "commit", "-q", "-m", text, "--", *paths],
                                  capture_output=True, text=True)
            if made.returncode == 0 or "nothing" in made.stdout + made.stderr:
                return True
        time.sleep(2)
    print(f"warning: could not commit {folder}", file=sys.stderr)
    return False


def named_in(message, name):
    """Whether a commit message names run ``name`` (``.../seed5`` is not named by ``.../seed50``)."""
    return re.search(re.escape(name) + r"(?!\d)", message) is not None


def finished_name(path):
    """``model/arm/seedN`` of a complete results file's path (relative to the dataset's folder), else None."""
    found = re.fullmatch(r"runs/([^/]+/[^/]+/seed\d+)\.json", path)
    return found and found.group(1)


def report(args, runs, dataset):
    planned = [r for r in runs if r.dataset == dataset]
    build_report(os.path.join(args.out, dataset), dataset, planned, record=not args.report_only)
    write_summary(args.out)


def publish(args, runs, candidates):
    """Publish the new rounds of ``candidates``; rebuild and commit each dataset that got some."""
    changed = set()
    for run in candidates:
        try:
            if publish_progress(args.out, args.work, run):
                changed.add(run.dataset)
        except OSError as err:               # the run's folder changing under us: next time, not a stop
            print(f"warning: could not publish {run.name} yet: {err}", file=sys.stderr, flush=True)
    for dataset in sorted(changed):
        report(args, runs, dataset)
        if args.commit:
            commit(args.out, dataset, f"study: {dataset} rounds in progress published")


def run_study(args):
    runs = plan(args.datasets, args.models, args.seeds, args.rounds, args.arms, args.config_files)
    print_plan(runs, args.out, args.jobs)
    if args.plan_only:
        return 0
    publish(args, runs, runs)
    if args.report_only:
        for dataset in args.datasets:
            report(args, runs, dataset)
            if args.commit:
                commit(args.out, dataset, f"study: {dataset} report rebuilt")
        return 0
    pending = [r for r in runs if not done(args.out, r)]
    running, failed = {}, set()
    while pending or running:
        for run in list(pending):
            if len(running) >= args.jobs:
                break
            needs = [_sibling(run, a) for a in run.needs]
            if any(n.key in failed for n in needs):
                pending.remove(run)
                failed.add(run.key)
                print(f"skip {run.dataset} {run.name}: a run it needs failed")
            elif all(done(args.out, n) for n in needs):
                pending.remove(run)
                busy = take(args, run)
                if busy:
                    print(f"skip {run.dataset} {run.name}: {busy}", flush=True)
                    continue
                running[launch(run, args)] = (run, time.time())
                print(f"start {run.dataset} {run.name}", flush=True)
        if not running:
            break
        time.sleep(5)
        going = [run for process, (run, _) in running.items() if process.poll() is None]
        publish(args, runs, going)                  # a finished run is published below, in its own commit
        for process, (run, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[process]
            release(run_dir(args.work, run))
            if process.returncode != 0 or not done(args.out, run):
                failed.add(run.key)
                log = os.path.join(run_dir(args.work, run), "study.log")
                print(f"FAILED {run.dataset} {run.name} (exit {process.returncode}); log: {log}", flush=True)
                print("".join(f"    {line}\n" for line in last_lines(log)), end="", flush=True)
                continue
            publish_progress(args.out, args.work, run)      # drops its partial file
            minutes = (time.time() - started) / 60
            print(f"done {run.dataset} {run.name} in {minutes:.1f} min", flush=True)
            report(args, runs, run.dataset)
            if args.commit:
                n_done = sum(done(args.out, r) for r in runs)
                commit(args.out, run.dataset, f"study: {run.dataset} {run.name} ({n_done} of {len(runs)} runs)")
    for dataset in args.datasets:
        report(args, runs, dataset)
    return 1 if failed else 0


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        return run_study(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
