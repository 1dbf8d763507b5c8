"""``opmask-sweep``: a grid and/or list of overrides on a base config, as one SLURM job array.

Sweep file (YAML)::

    name: ps_seeds                      # the sweep folder is OUT (default sweeps/NAME)
    config: configs/opmask_R50_FPN_130k.yaml
    overrides: {SOLVER.CHECKPOINT_PERIOD: 5000}   # every point (optional)
    grid: {EXP.PS: [voc, nvoc], SEED: [1, 2]}     # cartesian product (optional)
    points:                                       # each entry x the grid (optional)
      - {SOLVER.MAX_ITER: 130000, SOLVER.STEPS: "(120000,)"}
      - {SOLVER.MAX_ITER: 270000, SOLVER.STEPS: "(210000, 250000)"}
    resources: {time_min: 4320}                   # profile keys (optional)

Each point's exp-id is derived from its overrides (stable), its run folder is
``SWEEP/runs/EXP_ID``. ``submit`` writes ``SWEEP/sweep.json`` (the manifest) and returns at once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from fvcore.common.config import CfgNode

from opmask.cli.flags import add_dist_timeout
from opmask.cli.parser import OneLineParser
from opmask.config import load_config
from opmask.engine.exit_codes import run_command
from opmask.engine.run_dir import RunFolderError
from opmask.engine.run_folder import (
    ETA_SECONDS,
    ITERATION,
    STRONG_MASK_AP,
    TOTAL_LOSS,
    WEAK_MASK_AP,
    RunFolder,
)
from opmask.utils.fs import atomic_write_bytes

from .executor import (
    LaunchError,
    Resources,
    add_resource_flags,
    check_partition,
    resolve_resources,
)
from .slurm_state import ACTIVE, cancel, current_state, last_job, sacct_states
from .submission import (
    Record,
    Request,
    add_data_check_flag,
    check_world,
    sbatch_points,
    submit_points,
)
from .sweep_file import exp_id, expand_points, read_sweep_file
from .sweep_report import collect, varied_keys, watch

MANIFEST = "sweep.json"


def _opts(overrides: dict) -> list[str]:
    return [x for k, v in overrides.items() for x in (k, v if isinstance(v, str) else repr(v))]


# ---------------------------------------------------------------------- run state
def run_progress(run_dir: str) -> dict:
    """Iteration, loss, ETA and latest APs from metrics.json; outcomes from attempts.jsonl."""
    run = RunFolder(run_dir)
    info: dict = {"iteration": None, "loss": None, "eta": None, "strong": None, "weak": None}
    for m in run.read_metrics():
        if TOTAL_LOSS in m:
            info.update(iteration=m[ITERATION] + 1, loss=m[TOTAL_LOSS], eta=m[ETA_SECONDS])
        if WEAK_MASK_AP in m:
            info.update(strong=m.get(STRONG_MASK_AP), weak=m[WEAK_MASK_AP])
    attempts = run.read_attempts()
    info["outcomes"] = [a["outcome"] for a in attempts]
    info["finished"] = bool(attempts) and attempts[-1]["outcome"] == "completed"
    return info


# ---------------------------------------------------------------------- commands
def cmd_submit(args) -> int:
    spec = read_sweep_file(args.sweep_file)
    out = os.path.abspath(args.out or os.path.join("sweeps", spec["name"]))
    if os.path.isfile(os.path.join(out, MANIFEST)):
        raise LaunchError(f"{out} already holds a sweep; use `opmask-sweep resume {out}`")
    res = resolve_resources(args)
    for k, v in (spec.get("resources") or {}).items():
        if getattr(args, k, None) is None:  # the command line wins over the sweep file
            setattr(res, k, v)
    points = _points(spec, out)
    manifest = {
        "name": spec["name"],
        "sweep_file": os.path.abspath(args.sweep_file),
        "config": spec["config"],
        "resources": vars(res),
        "points": points,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    record = Manifest(manifest, out, refusal_hint=True)
    submit_points(
        points,
        _request(manifest, out, args),
        record,
        data_check=not args.no_data_check,
        resume=False,
    )
    print(
        f"submitted {len(points)} points as one job array; manifest: {out}/{MANIFEST}\n"
        f"follow it: opmask-sweep status {out}"
    )
    return 0


def _points(spec: dict, out: str) -> list[dict]:
    """Every point's config loaded (nothing written), its run folder ``OUT/runs/EXP_ID`` free."""
    points, hparams = [], ["EXP.HPARAMS", repr(tuple(varied_keys(spec)))]
    for i, overrides in enumerate(expand_points(spec)):
        cfg = load_config(spec["config"], _opts(overrides) + hparams)  # HParams: varied keys
        name = exp_id(overrides)
        run_dir = os.path.join(out, "runs", name)
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            raise RunFolderError(f"run folder {run_dir} of point {i} already holds a run")
        points.append(
            {"index": i, "exp_id": name, "overrides": overrides, "run_dir": run_dir, "cfg": cfg}
        )
    if len({p["exp_id"] for p in points}) < len(points):
        raise LaunchError("two points have the same overrides")
    return points


def _request(manifest: dict, out: str, args) -> Request:
    """The sweep's job array: its resources, OUT/slurm, job name ``sweep-NAME``."""
    return Request(
        Resources(**manifest["resources"]),
        os.path.join(out, "slurm", "%j"),  # %j is ARRAYID_TASK for array tasks
        f"sweep-{manifest['name']}",
        dist_timeout_min=args.dist_timeout,
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


def load_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise LaunchError(f"no sweep manifest at {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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


def _max_iter(point: dict) -> int:
    return CfgNode.load_cfg(point["cfg"]).SOLVER.MAX_ITER


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no points)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


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
    manifest = load_manifest(args.folder)
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
        check_world(CfgNode.load_cfg(p["cfg"]), res)
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
    s.add_argument("--out", help="sweep folder (default sweeps/NAME)")
    add_dist_timeout(s)
    add_data_check_flag(s)
    add_resource_flags(s)
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
