"""Run `python -m peftbench ...` as a real process that does not pay the libraries' import cost each time.

Why: importing torch, transformers, PEFT (which imports bitsandbytes and torch's inductor), TRL and datasets takes
about 12 s of wall time (10.8 s of CPU) on the 2-core CI machine, before peftbench does anything; the suite starts
about 40 CLI processes, so that import was most of its time. Those imports are the libraries' own.

How: one launcher process a pytest process (one per xdist worker), started fresh with `sys.executable` (not forked
from pytest, which has run torch ops and started OpenMP threads), imports those libraries and runs no torch op. For
each CLI invocation it forks a helper, which forks the child and reports its exit status; the child is a real OS
process: it does the chdir, takes the environment given, has the fds given as 0/1/2, sets `sys.argv` and runs
`runpy.run_module("peftbench", run_name="__main__", alter_sys=True)` like `python -m peftbench`, then the interpreter's
own ending (non-daemon threads joined, atexit handlers, stdio flushed, the exit code; an uncaught exception prints
its traceback and exits 1). Its pid, exit code, a SIGKILL, the files it writes and its stdout/stderr are real.
`popen()` and `run()` give the tests what `subprocess.Popen` and `subprocess.run` give (pid, wait, poll, kill,
returncode, communicate, stdout/stderr pipes, TimeoutExpired).

How the child differs from a cold `python -m peftbench`, and what falls back to one:
- The libraries above (and what they import) are already imported, with the environment the launcher was started
  with: the suite's own (`os.environ` when this module is first imported, PYTHONPATH set to the repo). A request whose
  environment differs from that one in a variable that matters at import runs cold (a plain `subprocess`), with the
  reason in `.cold_reason`. Variables that matter: every one the launcher's imports read (recorded as they import:
  HF_HUB_OFFLINE, HF_HOME, HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE, XDG_CACHE_HOME, CI, HOME, ...), the prefixes of
  those that scan the environment (TQDM_, FSSPEC_, NETWORKX_), and those read by native code or by the interpreter
  at its start (PYTHON*, OMP_, KMP_, GOMP_, MKL_, OPENBLAS_, TORCH*, PYTORCH_, CUDA_, NCCL_, LD_, MALLOC_, the
  locale's LANG/LC_*). peftbench itself is not imported by the launcher: each child imports it fresh.
- Warnings the libraries print while importing went to the launcher's log, not to the child's stderr.
- The imported objects are frozen out of the garbage collector (`gc.freeze()`, as tests/conftest.py does for pytest
  and as Python's docs advise before a fork): a child's full collections skip them, where a cold child's walk them
  all (about 1.5 s less CPU for a two-point tiny sweep, 8 s warm against 21 s cold, measured).
- Python's hash seed is the launcher's (one per pytest process, not one per child); `random` is reseeded by Python
  at fork, numpy's global generator is reseeded here; torch's default seed is a constant either way.
- The child's parent is the helper, not the pytest process (`os.getppid()`); its process group is the pytest
  process's (or its own, with `start_new_session`), as a cold child's.
- Only `python -m peftbench` runs warm (never `peftbench measure`, which injects through a site hook at interpreter
  start); everything else given to `popen`/`run` (torchrun, `-c` scripts, other programs) runs cold.
"""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "hydra", "omegaconf", "pandas")
# Read by the interpreter at start or by native libraries through getenv() (not seen by the os.environ tracking)
# or by libraries that scan os.environ for a prefix at import (seen as an iteration, not as single keys).
IMPORT_PREFIXES = (
    "PYTHON",
    "OMP_",
    "KMP_",
    "GOMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "NCCL_",
    "LD_",
    "MALLOC_",
    "LC_",
    "LANG",
    "TQDM_",
    "FSSPEC_",
    "NETWORKX_",
)
BASE_ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # what the tests give their CLI subprocesses
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL


# ---------------------------------------------------------------- the launcher (its own process)


def _frame_send(conn: socket.socket, obj: dict, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode() + b"\n"
    sent = socket.send_fds(conn, [data], list(fds)) if fds else 0
    conn.sendall(data[sent:])


class _Lines:
    """JSON lines from a socket, and the fds that came with them."""

    def __init__(self, conn: socket.socket):
        self.conn, self.buf, self.fds = conn, b"", []

    def ready(self) -> bool:
        return b"\n" in self.buf

    def feed(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.conn, 1 << 20, 8)
        self.fds.extend(fds)
        self.buf += data
        return bool(data)

    def next(self) -> dict:
        while not self.ready():
            if not self.feed():
                raise EOFError("launcher connection closed")
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def _serve(sock_path: str) -> None:
    """The launcher: import the libraries (recording which environment variables they read), then serve."""
    read: set[str] = set()
    environ_cls = type(os.environ)

    class Tracking(environ_cls):
        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

        def __contains__(self, key):
            read.add(key)
            return super().__contains__(key)

    os.environ.__class__ = Tracking
    try:
        for name in LIBRARIES:
            __import__(name)
    finally:
        os.environ.__class__ = environ_cls
    import gc

    gc.collect()
    gc.freeze()  # before any fork: children's collections skip what was imported (see the docstring)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    sys.stdout.write(json.dumps({"pid": os.getpid(), "keys": sorted(read)}) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [], 1.0)
        while True:  # reap the helpers that have reported
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1 << 16):
            return  # the pytest process closed its end (or died): children still running go on, as cold ones would
        if listener in ready:
            conn, _ = listener.accept()
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:  # the helper: forks the child, reports its pid and its exit status
                try:
                    listener.close()
                    _helper(conn)
                finally:
                    os._exit(0)
            conn.close()


def _helper(conn: socket.socket) -> None:
    lines = _Lines(conn)
    req = lines.next()
    fds = lines.fds
    pid = os.fork()
    if pid == 0:
        try:
            _child(req, fds, conn)
        finally:
            os._exit(70)  # not reached: _child ends with os._exit
    for fd in fds:
        os.close(fd)
    _frame_send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    _frame_send(conn, {"returncode": os.waitstatus_to_exitcode(status)})


_KEPT = []  # the launcher's stdio objects, kept referenced in a child so that collecting them never closes fd 0/1/2


def _child(req: dict, fds: list[int], conn: socket.socket) -> None:
    conn.close()  # the child holds no socket of the launcher's (the helper closed the listener)
    # Signal handlers: the launcher sets none, so the child has Python's own and whatever the imports installed,
    # as a cold start would.
    if req["new_session"]:
        os.setsid()
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])  # putenv too: native code reads the same
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    old = (sys.stdin, sys.stdout, sys.stderr)
    _KEPT.extend(old)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=old[0].encoding, errors=old[0].errors
    )
    for fd, name, o in ((1, "stdout", old[1]), (2, "stderr", old[2])):
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(
            raw if o.write_through else io.BufferedWriter(raw),
            encoding=o.encoding,
            errors=o.errors,
            line_buffering=os.isatty(fd) or name == "stderr",  # Python >= 3.9: stderr is line buffered
            write_through=o.write_through,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    sys.argv = ["-m", *req["args"]]
    sys.path[0] = os.getcwd()  # `python -m` puts the working directory first
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # fresh entropy, as a fresh interpreter's numpy would have
    code = 0
    interrupted = False
    try:
        import runpy

        runpy.run_module("peftbench", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        interrupted = True
        sys.excepthook(*sys.exc_info())
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _finish(code, interrupted)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish(code: int, interrupted: bool) -> None:
    """What the interpreter does when its main module ends: join non-daemon threads, run atexit, flush stdio."""
    import atexit as _atexit
    import threading

    try:
        threading._shutdown()
    except BaseException:
        pass
    _atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = code or 120  # what Python exits with when flushing stdout fails
    if interrupted:  # a fresh interpreter ends a KeyboardInterrupt by dying of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


# ---------------------------------------------------------------- the pytest side


class Launcher:
    """One launcher process, started on first use with BASE_ENV; `None`-safe: a launcher that will not start makes
    every request run cold, saying why."""

    def __init__(self, env: dict[str, str]):
        self.env = dict(env)
        self.dir = tempfile.mkdtemp(prefix="peftbench-warm-")
        self.path = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "launcher.log")
        boot = (
            "import importlib.util as u, sys; s = u.spec_from_file_location('peftbench_warm_cli', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m._serve(sys.argv[2])"
        )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", boot, __file__, self.path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                cwd=self.dir,
            )
        self.keys: set[str] | None = None
        self.error: str | None = None

    def ready(self, timeout: float = 300) -> bool:
        if self.keys is None and self.error is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else b""
            try:
                self.keys = set(json.loads(line)["keys"])
            except (ValueError, KeyError):
                self.error = f"the launcher did not start: {Path(self.log).read_text()[-2000:]}"
        return self.keys is not None

    def differs(self, env: dict[str, str]) -> str | None:
        """The first variable that matters at import and differs between `env` and the launcher's, or None."""
        for key in sorted(set(env) | set(self.env)):
            if (key in self.keys or key.startswith(IMPORT_PREFIXES)) and env.get(key) != self.env.get(key):
                return key
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)  # its socket and log


_LAUNCHER: Launcher | None = None


def launcher() -> Launcher:
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = Launcher(BASE_ENV)
        atexit.register(_LAUNCHER.close)
    return _LAUNCHER


def cold_reason(cmd: list[str], env: dict[str, str]) -> str | None:
    """Why `cmd` with `env` must run in a fresh interpreter, or None when it can run warm."""
    if list(cmd[:3]) != [sys.executable, "-m", "peftbench"]:
        return "not `python -m peftbench`"
    if len(cmd) > 3 and cmd[3] == "measure":
        return "`peftbench measure` injects through a site hook at interpreter start"
    warm = launcher()
    if not warm.ready():
        return warm.error
    key = warm.differs(env)
    return f"{key} differs from the launcher's environment and is read at import" if key else None


def _decode(data: bytes) -> str:
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class WarmProcess:
    """What `subprocess.Popen` gives, for a child forked by the launcher."""

    warm = True
    cold_reason = None

    def __init__(self, cmd, *, cwd, env, stdin, stdout, stderr, text, start_new_session):
        self.args = cmd
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        self._text = text
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(launcher().path)  # first: an OSError here leaves nothing open (popen then runs it cold)
        self._lines = _Lines(self._conn)
        child_fds, close_after, mine = [], [], {}
        for target, spec in enumerate((stdin, stdout, stderr)):
            if spec is None:
                fd = target
            elif spec == PIPE:
                r, w = os.pipe()
                parent, fd = (w, r) if target == 0 else (r, w)
                mine[target] = parent
                close_after.append(fd)
            elif spec == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                close_after.append(fd)
            elif spec == STDOUT and target == 2:
                fd = child_fds[1]
            elif isinstance(spec, int):
                fd = spec
            else:
                fd = spec.fileno()
            child_fds.append(fd)
        request = {"args": list(cmd[3:]), "cwd": str(cwd or os.getcwd()), "env": env, "new_session": start_new_session}
        _frame_send(self._conn, request, child_fds)
        for fd in close_after:
            os.close(fd)
        for target, fd in mine.items():
            mode = "wb" if target == 0 else "rb"
            stream = open(fd, mode)
            setattr(self, ("stdin", "stdout", "stderr")[target], stream)
        self.pid = self._lines.next()["pid"]

    def poll(self) -> int | None:
        if self.returncode is None:
            while not self._lines.ready() and select.select([self._conn], [], [], 0)[0]:
                if not self._lines.feed():
                    break
            if self._lines.ready():
                self._set(self._lines.next())
        return self.returncode

    def _set(self, msg: dict) -> None:
        self.returncode = msg["returncode"]
        self._conn.close()

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._lines.ready():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not select.select([self._conn], [], [], left)[0]:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                if not self._lines.feed():
                    raise RuntimeError("the warm launcher's helper died before reporting the exit status")
            self._set(self._lines.next())
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | str | None = None, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            if input:
                self.stdin.write(input.encode() if isinstance(input, str) else input)
            self.stdin.close()
        streams = {s.fileno(): (s, []) for s in (self.stdout, self.stderr) if s is not None and not s.closed}
        while streams:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            ready, _, _ = select.select(list(streams), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    streams[fd][1].append(chunk)
                else:
                    stream, chunks = streams.pop(fd)
                    stream.close()
                    stream._collected = b"".join(chunks)
        outs = [getattr(s, "_collected", None) if s is not None else None for s in (self.stdout, self.stderr)]
        if self._text:
            outs = [None if o is None else _decode(o) for o in outs]
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return tuple(outs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in (self.stdin, self.stdout, self.stderr):
            if s is not None and not s.closed:
                s.close()
        self.wait()


def popen(cmd, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None, text=False, start_new_session=False):
    """`subprocess.Popen(cmd, ...)`: warm when `cold_reason` finds none, else a cold Popen (with `.cold_reason`)."""
    env = dict(os.environ if env is None else env)
    options = dict(
        cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=text, start_new_session=start_new_session
    )
    reason = cold_reason(cmd, env)
    if reason is None:
        try:
            return WarmProcess(cmd, **options)
        except (ConnectionError, FileNotFoundError) as exc:
            reason = f"the launcher is gone ({exc})"
    proc = subprocess.Popen(cmd, **options)
    proc.warm, proc.cold_reason = False, reason
    return proc


def run(cmd, *, cwd=None, env=None, capture_output=False, text=False, timeout=None, stdout=None, stderr=None):
    """`subprocess.run(cmd, ...)` through `popen`: a CompletedProcess (with `.warm` and `.cold_reason`); on a
    timeout the child is killed and TimeoutExpired raised, as subprocess.run does."""
    if capture_output:
        stdout = stderr = PIPE
    proc = popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    done.warm, done.cold_reason = proc.warm, proc.cold_reason
    return done
