"""Python commands started by tests as real processes, without paying for torch's import each time.

A test that runs ``python -m opmask.cli.train ...`` (or ``-c CODE``, or a script) in a process of
its own, to see its exit code, its output and how it takes a signal, pays ~4.5 s of CPU before
``main`` starts: Python, torch and torchvision importing. Most of a short command's cost, and the
suite is CPU-bound on 2 cores. Here one server per test process imports them (and the whole
``opmask`` package) once, then forks a child per command. The child is a real process: its own
pid, exit status (a signal's too), stdin/stdout/stderr, working folder, environment, signal mask
and, with ``start_new_session``, its own session and process group; it can be signalled or
killed with SIGKILL like any other. It runs the command as ``python`` would: ``runpy`` for
``-m`` and scripts, ``exec`` for ``-c``, with ``sys.argv``, ``sys.path[0]``, ``__main__``,
stdio and ``SIGINT`` set as a fresh interpreter sets them; it ends through the interpreter's
own exit (threads joined, ``atexit`` run, an uncaught exception printed with exit code 1).

What a fork cannot give stays on fresh interpreters, by using :mod:`subprocess` directly: what
happens at import time (``tests/test_torch_free_starts.py``, ``tests/test_packaging.py``),
environment read at a process's start (``MALLOC_*``, ``OMP_NUM_THREADS``, ``PYTHON*`` other than
``PYTHONPATH`` and ``PYTHONUNBUFFERED``), and every process the product starts itself (spawned
ranks, SLURM jobs, the scripts' own children). ``OPMASK_TEST_WARM=0`` starts every command on a
fresh interpreter instead: the same tests, slower.

Use :func:`run` and :func:`Popen` as :func:`subprocess.run` and :class:`subprocess.Popen`; a
command that is not ``[sys.executable, ...]`` or asks for what a fork cannot give
(``preexec_fn``, ``pass_fds``, a user or group...) falls back to :mod:`subprocess`.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading

ENV = "OPMASK_TEST_WARM"  # "0": every command on a fresh interpreter
START_TIMEOUT_S = 300.0  # the server's imports, on a loaded 2-core machine

# Popen's keyword arguments a warm child honours; any other (given a value) falls back to a
# fresh interpreter.
_HONOURED = {"stdin", "stdout", "stderr", "cwd", "env", "text", "encoding", "errors"}
_HONOURED |= {"universal_newlines", "bufsize", "start_new_session"}


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def _command(args) -> tuple[str, str, list[str]] | None:
    """``("m", module, argv)``, ``("c", code, argv)`` or ``("path", script, argv)`` for a Python
    command of this interpreter without interpreter options; None for anything else."""
    if isinstance(args, (str, bytes, os.PathLike)):
        return None
    args = [os.fspath(a) for a in args]
    if len(args) < 2 or args[0] != sys.executable:
        return None
    if args[1] in ("-m", "-c") and len(args) >= 3:
        kind, what, rest = args[1][1], args[2], args[3:]
        return kind, what, [what if kind == "m" else "-c", *rest]
    if args[1].startswith("-"):
        return None  # an interpreter option (-u, -X, -W...): a fresh interpreter
    return "path", args[1], [args[1], *args[2:]]


def Popen(args, **kwargs) -> subprocess.Popen:
    """:class:`subprocess.Popen` whose Python command runs in a warm child where it can."""
    if not enabled() or _command(args) is None or set(kwargs) - _HONOURED:
        return subprocess.Popen(args, **kwargs)
    return _WarmPopen(args, **kwargs)


def run(args, *, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """:func:`subprocess.run` with :func:`Popen`: on a timeout (or any interruption) the child
    is killed and reaped, then the exception goes on."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with Popen(args, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args, out, err)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


class _WarmPopen(subprocess.Popen):
    """A Popen whose child is forked by this process's server; its exit status comes back over
    the connection the request went on (the child is the server's child, not ours)."""

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
                       errread, errwrite, restore_signals, gid, gids, uid, umask,
                       start_new_session, process_group):  # fmt: skip
        kind, what, argv = _command(args)
        request = {
            "kind": kind,
            "what": what,
            "argv": argv,
            "cwd": os.path.abspath(os.fspath(cwd if cwd is not None else os.getcwd())),
            "env": dict(os.environ if env is None else env),
            "new_session": bool(start_new_session),
            "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        }
        fds = [p2cread, c2pwrite, errwrite]
        fds = [fd if fd != -1 else default for fd, default in zip(fds, (0, 1, 2))]
        try:
            self._conn, self.pid = _server().launch(request, fds)
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)
        self._child_created = True

    def _status(self, data: bytes) -> int:
        self._conn.close()
        if not data:
            raise RuntimeError(f"warm server lost; the state of child {self.pid} is unknown")
        self.returncode = int(data)
        return self.returncode

    def _internal_poll(self, _deadstate=None, **_):
        if self.returncode is None:
            self._conn.setblocking(False)
            try:
                data = self._conn.recv(32)
            except BlockingIOError:
                return None
            self._status(data)
        return self.returncode

    def _wait(self, timeout):
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                data = self._conn.recv(32)
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            self._status(data)
        return self.returncode


# ---------------------------------------------------------------- the calling side's server
class _Client:
    """This process's server: started at the first warm command, stopped at exit."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="opmask-warm-")
        self.path = os.path.join(self.folder, "server")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.path],
            stdin=subprocess.PIPE,  # its lifeline: the server ends when this closes
            stdout=subprocess.PIPE,
        )
        ready = threading.Timer(START_TIMEOUT_S, self.proc.kill)
        ready.start()
        line = self.proc.stdout.readline()
        ready.cancel()
        if line.strip() != b"ready":
            raise RuntimeError(f"the warm server did not start (exit code {self.proc.poll()})")
        self.pid = os.getpid()
        atexit.register(self.stop)

    def launch(self, request: dict, fds: list[int]) -> tuple[socket.socket, int]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(self.path)
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        answer = conn.recv(64)
        if not answer.isdigit():
            conn.close()
            raise RuntimeError(f"the warm server could not fork: {answer.decode(errors='replace')}")
        return conn, int(answer)

    def stop(self) -> None:
        if os.getpid() != self.pid or self.proc.poll() is not None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for name in os.listdir(self.folder):
            os.unlink(os.path.join(self.folder, name))
        os.rmdir(self.folder)


_CLIENT: _Client | None = None
_CLIENT_LOCK = threading.Lock()


def _server() -> _Client:
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None or _CLIENT.pid != os.getpid() or _CLIENT.proc.poll() is not None:
            _CLIENT = _Client()
        return _CLIENT


# ---------------------------------------------------------------- the server (its own process)
def _preload() -> None:
    """What every child would import: torch, torchvision, TensorBoard's writer and every module
    of the ``opmask`` package (importing runs nothing: no threads, no torch ops, nothing open)."""
    import importlib
    import pkgutil

    import torch  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import torchvision  # noqa: F401

    import opmask

    for info in pkgutil.walk_packages(opmask.__path__, "opmask."):
        importlib.import_module(info.name)


def _serve(path: str) -> None:
    """Accept a request per connection, fork its child, answer its pid, and its exit status once
    it is reaped. Ends when the caller closes our stdin. A forked child returns from here with
    the connection's command to run; the server itself returns None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the test run
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection to answer
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        ready, _, _ = select.select([listener, wake_r, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            return None
        if wake_r in ready:
            os.read(wake_r, 4096)
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()
        if listener not in ready:
            continue
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            conn.send(str(e).encode())
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if pid == 0:
            for sock in (listener, conn, *waiting.values()):
                sock.close()
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            return _become(request, fds)
        for fd in fds:
            os.close(fd)
        conn.send(str(pid).encode())
        waiting[pid] = conn


def _become(request: dict, fds: list[int]) -> dict:
    """In the forked child: take the request's stdio, session, folder, environment, signal
    state, ``sys.argv`` and ``sys.path``, as a fresh ``python`` would have them."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, request["mask"])
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = _stream(0, "r", unbuffered)
    sys.stdout = sys.__stdout__ = _stream(1, "w", unbuffered)
    sys.stderr = sys.__stderr__ = _stream(2, "w", unbuffered, line_buffering=not unbuffered)
    kind, what = request["kind"], request["what"]
    first = {"m": os.getcwd(), "c": "", "path": os.path.dirname(os.path.abspath(what))}[kind]
    sys.path[:] = [first, *_pythonpath(env), *_BASE_PATH]
    sys.argv[:] = request["argv"]
    return request


def _pythonpath(env) -> list[str]:
    """``PYTHONPATH``'s entries as the interpreter puts them in ``sys.path``: absolute and
    normalised, an empty one meaning the working folder."""
    value = env.get("PYTHONPATH", "")
    return [os.path.abspath(p) for p in value.split(os.pathsep)] if value else []


def _stream(fd: int, mode: str, unbuffered: bool, line_buffering: bool = False):
    import io

    raw = io.FileIO(fd, mode, closefd=False)
    buffered = raw if unbuffered and mode == "w" else io.open(fd, mode + "b", closefd=False)
    return io.TextIOWrapper(
        buffered,
        encoding="utf-8",
        errors="backslashreplace" if fd == 2 else "strict",
        line_buffering=line_buffering,
        write_through=unbuffered,
    )


def _run(request: dict) -> None:
    """Run the command in this (child) process; what it raises ends the process as it would
    end ``python``: SystemExit's code, or the traceback and 1, or death by SIGINT."""
    import runpy
    import types

    kind, what = request["kind"], request["what"]
    if kind == "m":
        sys.modules.pop(what, None)  # preloaded; ``python -m`` runs it as ``__main__`` only
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    elif kind == "path":
        runpy.run_path(what, run_name="__main__")
    else:
        main = types.ModuleType("__main__")
        main.__builtins__ = __builtins__
        sys.modules["__main__"] = main
        exec(compile(what, "<string>", "exec"), main.__dict__)


_BASE_PATH: list[str] = []

if __name__ == "__main__":
    # sys.path without this script's folder and this process's PYTHONPATH: what a child puts
    # its own first entry and PYTHONPATH in front of.
    _BASE_PATH[:] = sys.path[1 + len(_pythonpath(os.environ)) :]
    _preload()
    import gc

    gc.freeze()  # children's collections and exit leave the preloaded objects (and pages) alone
    _request = _serve(sys.argv[1])
    if _request is not None:  # a forked child: the interpreter's own exit follows
        _run(_request)
