"""``opmask-sweep``: a grid and/or list of overrides on a base config, as one SLURM job array.

Sweep file (YAML)::

    name: ps_seeds                      # the sweep folder is --output (default sweeps/NAME)
    config: configs/opmask_R50_FPN_130k.yaml
    overrides: {SOLVER.CHECKPOINT_PERIOD: 5000}   # every point (optional)
    grid: {EXP.PS: [voc, nvoc], SEED: [1, 2]}     # cartesian product (optional)
    points:                                       # each entry x the grid (optional)
      - {SOLVER.MAX_ITER: 130000, SOLVER.STEPS: "(120000,)"}
      - {SOLVER.MAX_ITER: 270000, SOLVER.STEPS: "(210000, 250000)"}
    resources: {time_min: 4320}                   # profile keys (optional)

Each point's exp-id is derived from its overrides (stable; a short hash is appended when the
readable form would drop characters), its run folder is ``SWEEP/runs/EXP_ID``. ``submit`` writes
``SWEEP/sweep.json`` (the manifest) and returns at once; ``submit --dry-run`` prints each point's
run folder and overrides and the array's sbatch script, and writes and submits nothing. A config
warning that every point shares is printed once per sweep. ``submit --eval-only`` submits a job
array that evaluates each point's newest checkpoint (``opmask-train --eval-only`` on its run
folder); every point's run folder must hold one, and the manifest is left as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import shlex
import sys

import yaml
from fvcore.common.config import CfgNode

from opmask.cli.flags import add_dist_timeout, old_names
from opmask.cli.parser import OneLineParser
from opmask.config import checks, load_config
from opmask.run.claim import RunFolderError
from opmask.run.folder import RunFolder
from opmask.train.events import (
    ETA_SECONDS,
    ITERATION,
    STRONG_MASK_AP,
    TOTAL_LOSS,
    WEAK_MASK_AP,
)
from opmask.utils.exit_codes import run_command
from opmask.utils.fs import atomic_write_bytes
from opmask.utils.table import format_table

from .executor import (
    LaunchError,
    NoCluster,
    Resources,
    add_resource_flags,
    check_partition,
    check_resource,
    not_checked_note,
    resolve_resources,
    sbatch_script,
)
from .slurm_state import ACTIVE, cancel, current_state, last_job, sacct_states
from .submission import (
    Record,
    Request,
    add_data_check_flag,
    check_evaluable,
    check_points,
    sbatch_points,
    submit_points,
    validate,
)
from .sweep_file import expand_points, read_sweep_file, run_names
from .sweep_report import collect, varied_keys, watch

MANIFEST = "sweep.json"


def _opts(overrides: dict) -> list[str]:
    return [x for k, v in overrides.items() for x in (k, v if isinstance(v, str) else repr(v))]


# ---------------------------------------------------------------------- run state
def run_progress(run_dir: str) -> dict:
    """Iteration, loss, ETA and latest APs from metrics.json; outcomes from attempts.jsonl. A
    value that is not a finite number reads as unknown (None); a training record without an
    integer iteration is skipped."""
    run = RunFolder(run_dir)
    info: dict = {"iteration": None, "loss": None, "eta": None, "strong": None, "weak": None}
    for m in run.read_metrics():
        if TOTAL_LOSS in m and isinstance(m.get(ITERATION), int):
            it, loss, eta = m[ITERATION] + 1, _number(m[TOTAL_LOSS]), _number(m.get(ETA_SECONDS))
            info.update(iteration=it, loss=loss, eta=eta)
        if WEAK_MASK_AP in m:
            info.update(strong=_number(m.get(STRONG_MASK_AP)), weak=_number(m[WEAK_MASK_AP]))
    outcomes = [str(a.get("outcome", "?")) for a in run.read_attempts()]
    info["outcomes"] = outcomes
    info["finished"] = bool(outcomes) and outcomes[-1] == "completed"
    return info


def _number(value) -> float | None:
    """``value`` when it is a finite number, else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


# ---------------------------------------------------------------------- commands
def cmd_submit(args) -> int:
    spec = read_sweep_file(args.sweep_file)
    out = os.path.abspath(args.output or os.path.join("sweeps", spec["name"]))
    if not args.eval_only and os.path.isfile(os.path.join(out, MANIFEST)):
        raise LaunchError(f"{out} already holds a sweep; use `opmask-sweep resume {out}`")
    res = resolve_resources(args)
    for k, v in (spec.get("resources") or {}).items():
        if getattr(args, k, None) is None:  # the command line wins over the sweep file
            setattr(res, k, v)
    overrides = expand_points(spec)
    names = run_names(overrides)  # identical points are refused before any config is loaded
    # What every point shares is checked once, before any point: the cluster and partition
    # (a dry run on a machine without SLURM leaves them unchecked and says so).
    note = None
    try:
        check_partition(res.partition)
    except NoCluster as e:
        if not args.dry_run:
            raise
        note = not_checked_note(res, e.reason)
    points = _points(
        spec,
        overrides,
        names,
        out,
        res,
        data_check=not args.no_data_check,
        eval_only=args.eval_only,
    )
    manifest = {
        "name": spec["name"],
        "sweep_file": os.path.abspath(args.sweep_file),
        "config": spec["config"],
        "resources": vars(res),
        "points": points,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    request = _request(manifest, out, args)
    if args.dry_run:
        return _dry_run(points, request, note=note, config=spec["config"])
    if args.eval_only:  # the manifest stays the training's, as opmask-submit --eval-only
        jobs = submit_points(points, request, Record(), data_check=False, resume=False)
        print(
            f"submitted the evaluation of {len(points)} points' newest checkpoints as one job "
            f"array ({jobs[0].job_id.split('_')[0]}); each run folder's log.txt and "
            "metrics.json get the results"
        )
        return 0
    record = Manifest(manifest, out, refusal_hint=True)
    submit_points(points, request, record, data_check=False, resume=False)  # _points did
    print(
        f"submitted {len(points)} points as one job array; manifest: {out}/{MANIFEST}\n"
        f"follow it: opmask-sweep status {out}"
    )
    return 0


def _dry_run(points: list[dict], request: Request, *, note: str | None, config: str) -> int:
    """Print each point's run folder and overrides (with ``request.eval_only``, also the
    ``opmask-train --eval-only`` command its job is equivalent to) and the array's sbatch script
    (the points and the partition are checked as ``submit`` checks them); write and submit
    nothing. ``note``: no SLURM cluster answers here, the partition was not asked about (the one
    line printed on stderr)."""
    check_points(points, dataclasses.replace(request, local=True), data_check=False)
    for p in points:
        print(f"point {p['index']}: {p['run_dir']}  {' '.join(_opts(p['overrides']))}")
        if request.eval_only:
            command = ["opmask-train", "--config-file", config, "--output", p["run_dir"]]
            print("  evaluates as: " + shlex.join([*command, "--eval-only", *p["opts"]]))
    array = len(points) if len(points) > 1 else None  # one point is a plain job, as submitted
    print(sbatch_script(request.folder, request.res, request.name, array))
    if note is not None:
        print(note, file=sys.stderr)
    return 0


def _points(
    spec: dict,
    overrides: list[dict],
    names: list[str],
    out: str,
    res: Resources,
    *,
    data_check: bool,
    eval_only: bool = False,
) -> list[dict]:
    """Every point's config loaded (nothing written), its world size and (``data_check``) its
    datasets and MODEL.WEIGHTS checked (each once), its run folder ``OUT/runs/NAME`` free (with
    ``eval_only``: holding a checkpoint to evaluate; the world size is then not checked, as for
    opmask-submit --eval-only): what all points share fails at the first one. A config warning
    is printed once, not per point."""
    points, hparams = [], ["EXP.HPARAMS", repr(tuple(varied_keys(spec)))]
    checked: set = set()
    with _each_warning_once(checks.logger):
        for i, (point, name) in enumerate(zip(overrides, names)):
            opts = _opts(point) + hparams  # HParams: the varied keys
            cfg = load_config(spec["config"], opts)
            run_dir = os.path.join(out, "runs", name)
            if eval_only:
                check_evaluable(run_dir, what=f"point {i}: ", hint="check --output, the sweep")
            # the same IMS_PER_BATCH for all points fails at the first
            validate(cfg, res, eval_only=eval_only, data=data_check, checked=checked)
            if not eval_only and os.path.isdir(run_dir) and os.listdir(run_dir):
                raise RunFolderError(f"run folder {run_dir} of point {i} already holds a run")
            points.append(
                {"index": i, "exp_id": name, "overrides": point, "run_dir": run_dir, "cfg": cfg}
                | ({"opts": opts} if eval_only else {})
            )
    return points


class _Once(logging.Filter):
    """Lets each distinct message through once; counts the repeats it drops."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            self.dropped += 1
            return False
        self.seen.add(message)
        return True


@contextlib.contextmanager
def _each_warning_once(logger: logging.Logger):
    """Within the block, ``logger`` prints each distinct message once; afterwards one line says
    how many repeats (other points' copies) were not shown."""
    once = _Once()
    logger.addFilter(once)
    try:
        yield
    finally:
        logger.removeFilter(once)
    if once.dropped:
        print(
            f"({once.dropped} more copies of the config warning(s) above, one per further "
            "point, not shown)",
            file=sys.stderr,
        )


def _request(manifest: dict, out: str, args) -> Request:
    """The sweep's job array: its resources, OUT/slurm, job name ``sweep-NAME`` (evaluations:
    ``sweep-eval-NAME``)."""
    eval_only = getattr(args, "eval_only", False)
    return Request(
        Resources(**manifest["resources"]),
        os.path.join(out, "slurm", "%j"),  # %j is ARRAYID_TASK for array tasks
        f"sweep-{'eval-' if eval_only else ''}{manifest['name']}",
        dist_timeout_min=args.dist_timeout,
        eval_only=eval_only,
    )


class Manifest(Record):
    """SWEEP/sweep.json: saved once the run folders are claimed (a refused submission leaves a
    resumable sweep), then with each point's job id or sbatch's refusal (``last_error``)."""

    keep_on_refusal = True

    def __init__(self, manifest: dict, out: str, *, refusal_hint: bool = False):
        self.manifest, self.out, self.refusal_hint = manifest, out, refusal_hint

    def save(self) -> None:
        path = os.path.join(self.out, MANIFEST)
        atomic_write_bytes(path, json.dumps(self.manifest, indent=1).encode())

    def claimed(self, points: list[dict]) -> None:
        for p in points:
            p["job_ids"] = []
        self.save()

    def refused(self, error: LaunchError) -> LaunchError:
        self.manifest["last_error"] = str(error)
        self.save()
        if not self.refusal_hint:
            return error
        return LaunchError(
            f"{error}; the sweep is saved in {self.out} (nothing submitted): fix the request and "
            f"run `opmask-sweep resume {self.out}` with the corrected resource flags"
        )

    def submitted(self, points: list[dict], jobs: list) -> None:
        for p, job in zip(points, jobs):
            p.setdefault("job_ids", []).append(job.job_id)
        self.manifest.pop("last_error", None)
        self.save()


_POINT_KEYS = {"index": int, "exp_id": str, "overrides": dict, "run_dir": str, "cfg": str}


def load_manifest(folder: str, *, resources: bool = False) -> dict:
    """``FOLDER/sweep.json``, checked to have the shape ``submit`` writes (``resources``: it
    must also hold the sweep's SLURM request, which ``resume`` reuses).

    Raises:
        LaunchError: no manifest, or one that is not JSON or has another shape; the message names
            the file and what is wrong.
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise LaunchError(f"no sweep manifest at {path}")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LaunchError(f"{path}: not a sweep manifest (not JSON: {e})") from None
    problem = _manifest_problem(manifest, resources)
    if problem:
        raise LaunchError(f"{path}: not a sweep manifest ({problem})")
    for key, value in (manifest.get("resources") or {}).items():
        check_resource(key, value, f"{path}: resources.{key}")
    return manifest


def _manifest_problem(manifest, resources: bool) -> str | None:
    """What is wrong with a manifest's shape, or None."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    if not isinstance(manifest.get("name"), str):
        return "'name' is missing or not a string"
    if not isinstance(manifest.get("points"), list):
        return "'points' is missing or not a list"
    for i, p in enumerate(manifest["points"]):
        if not isinstance(p, dict):
            return f"points[{i}] is not an object"
        for key, kind in _POINT_KEYS.items():
            if not isinstance(p.get(key), kind) or isinstance(p.get(key), bool):
                return f"points[{i}].{key} is missing or not a {kind.__name__}"
        job_ids = p.get("job_ids", [])
        if not (isinstance(job_ids, list) and all(isinstance(j, str) for j in job_ids)):
            return f"points[{i}].job_ids is not a list of job ids"
    found = manifest.get("resources")
    if found is None and resources:
        return "'resources' is missing"
    if found is not None and not isinstance(found, dict):
        return "'resources' is not an object"
    unknown = sorted(set(found or {}) - set(Resources.__dataclass_fields__))
    return f"'resources' has unknown keys {unknown}" if unknown else None


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def status_rows(manifest: dict) -> list[dict]:
    states = sacct_states([last_job(p) for p in manifest["points"]])
    rows = []
    for p in manifest["points"]:
        prog = run_progress(p["run_dir"])
        history = states.get(last_job(p), [])
        rows.append(
            {
                "point": p["index"],
                "exp_id": p["exp_id"],
                "job": last_job(p) or "-",
                "state": current_state(states, p),
                "iter": f"{prog['iteration'] or 0}/{_max_iter(p)}",
                "loss": _fmt(prog["loss"]),
                "eta": "-"
                if prog["eta"] is None or prog["finished"]
                else str(datetime.timedelta(seconds=int(prog["eta"]))),
                "strong_AP": _fmt(prog["strong"], ".2f"),
                "weak_AP": _fmt(prog["weak"], ".2f"),
                "requeues": sum(o in ("timeout", "preemption") for o in prog["outcomes"])
                + sum(s in ("NODE_FAIL", "PREEMPTED") for s in history),
                "last_outcome": prog["outcomes"][-1] if prog["outcomes"] else "-",
            }
        )
    return rows


def _max_iter(point: dict) -> str:
    """The point's SOLVER.MAX_ITER ('?' when its saved config does not say)."""
    solver = (_yaml_mapping(point["cfg"]) or {}).get("SOLVER")
    value = solver.get("MAX_ITER") if isinstance(solver, dict) else None
    return str(value) if isinstance(value, int) else "?"


def _yaml_mapping(text: str) -> dict | None:
    """``text`` read as a YAML mapping; None when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _saved_config(point: dict, path: str) -> CfgNode:
    """A manifest point's saved config, to resubmit it.

    Raises:
        LaunchError: it is not a config with SOLVER.IMS_PER_BATCH and MODEL.DEVICE (naming the
            manifest and the point).
    """
    data = _yaml_mapping(point["cfg"]) or {}
    solver, model = data.get("SOLVER"), data.get("MODEL")
    if not (
        isinstance(solver, dict)
        and isinstance(solver.get("IMS_PER_BATCH"), int)
        and isinstance(model, dict)
        and isinstance(model.get("DEVICE"), str)
    ):
        raise LaunchError(
            f"{path}: point {point['index']}'s cfg is not a config with SOLVER.IMS_PER_BATCH and "
            "MODEL.DEVICE (the manifest was edited?)"
        )
    return CfgNode(data)


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no points)"
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) + 2 for k in keys]
    widths[-1] -= 2  # two spaces between columns, none after the last
    cells = [[str(r[k]) for k in keys] for r in rows]
    return format_table(keys, cells, widths, align="<" * len(keys))


def cmd_status(args) -> int:
    manifest = load_manifest(args.folder)
    if args.watch is None:
        print(table(status_rows(manifest)))
        return 0

    def frame() -> tuple[str, bool]:
        rows = status_rows(manifest)
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        head = f"{manifest['name']}  {stamp}  (every {args.watch:g} s; Ctrl-C to stop)"
        return head + "\n" + table(rows), all(r["state"] not in ACTIVE for r in rows)

    watch(frame, args.watch)
    return 0


def cmd_resume(args) -> int:
    """Resubmit unfinished points that are not queued or running (also never-submitted ones,
    after a refused submission), with the manifest's resources changed by the flags given."""
    manifest = load_manifest(args.folder, resources=True)
    base = Resources(**manifest["resources"])
    if args.profile:
        base = resolve_resources(argparse.Namespace(profile=args.profile))
    res = resolve_resources(args, base)
    check_partition(res.partition)
    states = sacct_states([last_job(p) for p in manifest["points"]])
    todo = [
        p
        for p in manifest["points"]
        if not run_progress(p["run_dir"])["finished"] and current_state(states, p) not in ACTIVE
    ]
    if not todo:
        print("nothing to resume: every point finished or is queued/running")
        return 0
    for p in todo:
        cfg = _saved_config(p, os.path.join(args.folder, MANIFEST))
        validate(cfg, res, eval_only=False, data=False, checked=set())
    manifest["resources"] = vars(res)
    out = os.path.abspath(args.folder)
    sbatch_points(todo, _request(manifest, out, args), Manifest(manifest, out))
    print(f"resubmitted points {[p['index'] for p in todo]} as one job array")
    return 0


def cmd_cancel(args) -> int:
    manifest = load_manifest(args.folder)
    chosen = [p for p in manifest["points"] if args.point is None or p["index"] in args.point]
    ids = [last_job(p) for p in chosen if last_job(p)]
    cancel(ids)  # points sbatch never accepted have nothing to cancel
    print(f"cancelled {len(ids)} point(s): {', '.join(ids) or '-'}")
    return 0


def cmd_collect(args) -> int:
    print(collect(load_manifest(args.folder), args.folder))
    return 0


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="opmask-sweep",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit every point as one job array and return")
    s.add_argument("sweep_file")
    s.add_argument("--output", metavar="DIR", help="sweep folder (default sweeps/NAME)")
    old_names(s, "--out")
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="check every point, print its run folder and overrides and the array's sbatch "
        "script; write and submit nothing (works without SLURM: the partition is then unchecked)",
    )
    s.add_argument(
        "--eval-only",
        action="store_true",
        help="a job array that evaluates each point's newest checkpoint (opmask-train "
        "--eval-only on its run folder); every point's run folder must hold one",
    )
    add_dist_timeout(s)
    add_data_check_flag(s)
    add_resource_flags(s)
    old_names(s, "--gpus-per-node")  # --num-gpus, as opmask-train
    for name, help_ in (
        ("status", "a table per point: state, progress, loss, ETA, AP, requeues"),
        ("resume", "resubmit only unfinished or failed points"),
        ("cancel", "scancel the sweep's jobs (or --point I ...)"),
        ("collect", "write results.csv, results.md and results.png of final metrics"),
    ):
        c = sub.add_parser(name, help=help_)
        c.add_argument("folder", help="the sweep folder (holding sweep.json)")
        if name == "status":
            c.add_argument(
                "--watch",
                type=float,
                nargs="?",
                const=10.0,
                metavar="SECONDS",
                help="redraw in place every SECONDS (default 10) until no point is active",
            )
        if name == "cancel":
            c.add_argument("--point", type=int, nargs="+", help="only these point indices")
        if name == "resume":
            add_dist_timeout(c)
            add_resource_flags(c)  # corrections of the saved request (e.g. a refused --nodes)
            old_names(c, "--gpus-per-node")
            c.set_defaults(profile=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line, exit 1; any other exception: its traceback, exit_codes.BUG."""
    args = parser().parse_args(argv)
    commands = {
        "submit": cmd_submit,
        "status": cmd_status,
        "resume": cmd_resume,
        "cancel": cmd_cancel,
        "collect": cmd_collect,
    }
    return run_command("opmask-sweep", commands[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
