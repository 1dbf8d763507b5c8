"""``tests/warm.py``: a command forked from the warm server is a real process that sees what a
fresh interpreter sees, exits, fails and dies as one does, and is reaped on a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import warm

# What a command sees of its interpreter: printed by the same code run fresh and warm.
PROBE = """
import json, os, signal, sys
handlers = {s: repr(signal.getsignal(getattr(signal, s))) for s in ("SIGINT", "SIGTERM", "SIGPIPE")}
main = sys.modules["__main__"]
print(json.dumps({
    "argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "env": os.environ.get("WARM_PROBE"),
    "name": __name__, "file": getattr(main, "__file__", None),
    "spec": getattr(getattr(main, "__spec__", None), "name", None),
    "handlers": handlers, "mask": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "own_session": os.getsid(0) == os.getpid(), "own_group": os.getpgid(0) == os.getpid(),
    "stdout": [sys.stdout.line_buffering, sys.stdout.write_through, sys.stdout.encoding],
    "stderr": [sys.stderr.line_buffering, sys.stderr.errors],
    "stdin": sys.stdin.read(),
}))
"""


@pytest.fixture(autouse=True)
def _warm_on(monkeypatch):
    monkeypatch.setenv(warm.ENV, "1")


def _both(args, **kwargs) -> tuple[dict, dict]:
    fresh = subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)
    forked = warm.run(args, capture_output=True, text=True, timeout=60, **kwargs)
    assert fresh.returncode == forked.returncode == 0, (fresh.stderr, forked.stderr)
    return json.loads(fresh.stdout), json.loads(forked.stdout)


@pytest.mark.parametrize("kind", ["-m", "-c", "script"])
@pytest.mark.parametrize("session", [False, True])
def test_a_forked_command_sees_what_a_fresh_interpreter_sees(tmp_path, kind, session):
    (tmp_path / "probe.py").write_text(PROBE)
    head = {"-m": ["-m", "probe"], "-c": ["-c", PROBE], "script": [str(tmp_path / "probe.py")]}
    env = dict(os.environ, WARM_PROBE="yes", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(tmp_path / "extra") + os.pathsep + env.get("PYTHONPATH", "")
    args = [sys.executable, *head[kind], "a", "--b"]
    fresh, forked = _both(
        args, cwd=tmp_path, env=env, input="stdin text", start_new_session=session
    )
    assert forked == fresh
    assert (
        fresh["env"] == "yes"
        and fresh["stdin"] == "stdin text"
        and fresh["argv"][1:] == ["a", "--b"]
    )
    assert fresh["own_session"] is session


def test_exit_codes_tracebacks_and_output_streams(tmp_path):
    code = "import sys; print('out'); print('err', file=sys.stderr); a = sys.argv[1]\n"
    code += "sys.exit(int(a) if a.isdigit() else a)"
    proc = warm.run([sys.executable, "-c", code, "7"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    proc = warm.run([sys.executable, "-c", code, "a message"], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (1, "err\na message\n")  # sys.exit("...") as python
    proc = warm.run([sys.executable, "-c", "raise ValueError('boom')"], capture_output=True)
    assert proc.returncode == 1 and proc.stderr.endswith(b"ValueError: boom\n")
    # threads are joined and atexit handlers run before the exit, as at an interpreter's end
    code = """
import atexit, threading, time
atexit.register(print, "atexit")
threading.Thread(target=lambda: (time.sleep(0.3), print("thread"))).start()
"""
    assert warm.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == (
        "thread\natexit\n"
    )


def test_signals_reach_the_child_and_its_status_is_the_signal(tmp_path):
    sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    proc = warm.Popen(sleeper, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdout.close()
    # its own session: the process group takes a terminal's Ctrl-C, as KeyboardInterrupt
    catcher = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('ok')"
    proc = warm.Popen(
        [sys.executable, "-c", catcher], stdout=subprocess.PIPE, start_new_session=True
    )
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert (proc.returncode, out) == (0, b"ok\n")
    proc = warm.Popen(sleeper, stdout=subprocess.DEVNULL)
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    proc.terminate()
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_a_timeout_kills_the_child_and_reaps_it():
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    with open(os.devnull, "w") as sink, pytest.raises(subprocess.TimeoutExpired):
        warm.run([sys.executable, "-c", code], timeout=1, stderr=sink)
    # the server answered the child's status: nothing of it is left behind
    children = subprocess.run(
        ["pgrep", "-P", str(warm._server().proc.pid)], capture_output=True, text=True
    )
    assert children.stdout == ""


def test_a_forked_command_can_spawn_fresh_processes():
    code = (
        "import multiprocessing as mp, os\n"
        "p = mp.get_context('spawn').Process(target=os.getpid); p.start(); p.join()\n"
        "print(p.exitcode)"
    )
    proc = warm.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "0\n"), proc.stderr


def test_one_server_per_process_and_what_falls_back_to_subprocess(monkeypatch):
    first = warm.Popen([sys.executable, "-c", "pass"])
    first.wait(timeout=30)
    server = warm._server().proc.pid
    second = warm.Popen([sys.executable, "-c", "pass"])
    second.wait(timeout=30)
    assert isinstance(first, warm._WarmPopen) and warm._server().proc.pid == server
    # not a Python command of this interpreter, an interpreter option, or a fork's limits
    for args, kwargs in [
        (["true"], {}),
        ([sys.executable, "-u", "-c", "pass"], {}),
        ([sys.executable, "-c", "pass"], {"pass_fds": (0,)}),
    ]:
        proc = warm.Popen(args, **kwargs)
        assert type(proc) is subprocess.Popen and proc.wait(timeout=30) == 0
    monkeypatch.setenv(warm.ENV, "0")
    proc = warm.Popen([sys.executable, "-c", "pass"])
    assert type(proc) is subprocess.Popen and proc.wait(timeout=30) == 0
