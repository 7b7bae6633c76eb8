"""Running a candidate program: a separate interpreter, limited, isolated, and never trusted.

Code benchmarks (HumanEval) are graded by executing what the model wrote against the
dataset's tests. Model output is arbitrary code, so it never runs in the orchestrating
process. Each program gets its own `python -I -S` (no site-packages, no environment, no
current directory on the path) in a throwaway working directory, under:

- resource limits the harness sets on itself before the candidate's code runs: CPU seconds,
  address space, file size, open files and processes (`RLIMIT_NPROC` does not bind root, so
  forking is also refused below);
- a wall-clock timeout, after which its whole process group is killed;
- an audit hook installed by the trusted harness before the candidate's code runs (CPython
  audit hooks cannot be removed): it refuses sockets, subprocesses, forks, signals to other
  processes, file deletion and renaming, `ctypes`, frame inspection, and opening any file
  outside the throwaway directory and the standard library (reading or listing too).

A program passes only when the tests ran to the end and the harness then printed a random
token, so `sys.exit(0)` or `os._exit(0)` before the tests is a failure. The threat is code a
model wrote by accident (loops, exits, deletions, forks), not an adversary who reads the
harness's frames for the token: grading is not a security boundary against a tailored exploit.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one program may use. The defaults suit HumanEval's tests (milliseconds each)."""

    wall_seconds: float = 5.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    open_files: int = 64
    processes: int = 64


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # "passed", "failed", "timeout", "refused: <event>", ...


# The trusted harness, run as the child's main program: it limits itself, installs the audit
# hook, then runs the untrusted code. It reads only what is on its own path (-I -S: the
# standard library) and the throwaway directory.
_HARNESS = r"""
import json, os, resource, sys
import collections, functools, heapq, itertools, math, re, string, typing  # before the guard

def main():
    job = json.loads(sys.stdin.read())
    box, token = job.pop("dir"), job.pop("token")
    for name, value in job.pop("limits").items():
        resource.setrlimit(getattr(resource, name), (value, value))
    readable = tuple(os.path.realpath(p) for p in sys.path if p)
    refused = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "subprocess.Popen",
               "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
               "os.killpg", "os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown",
               "os.link", "os.symlink", "shutil.rmtree", "shutil.copyfile", "ctypes.dlopen", "ctypes.cdata",
               "os.chdir", "os.putenv", "os.unsetenv", "pty.spawn", "_posixsubprocess.fork_exec"}

    def inside(path, roots):
        try:
            real = os.path.realpath(path if isinstance(path, str) else os.fsdecode(path))
        except Exception:
            return False
        return any(real == r or real.startswith(r + os.sep) for r in roots)

    def guard(event, args):
        if event in refused:
            raise PermissionError(f"sandbox refused {event}")
        if event in ("open", "os.listdir", "os.scandir"):
            path = args[0] if args else "."
            if isinstance(path, int):
                return
            writing = event == "open" and any(c in str(args[1] or "r") for c in "wax+")
            if inside(path, (box,)) or (not writing and inside(path, readable)):
                return
            raise PermissionError(f"sandbox refused {event} {path!r}")

    program = job.pop("program")
    sys.addaudithook(guard)
    try:
        exec(compile(program, "<candidate>", "exec"), {"__name__": "__candidate__"})
    except BaseException as err:
        print(f"failed: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.write(token)
    sys.stdout.flush()
    os._exit(0)

main()
"""


def run_program(program: str, limits: Limits = Limits()) -> Outcome:
    """Run `program` (the candidate and its tests, one script) in a fresh limited interpreter."""
    token = secrets.token_hex(16)
    rlimits = {"RLIMIT_CPU": limits.cpu_seconds, "RLIMIT_AS": limits.memory_bytes, "RLIMIT_FSIZE": limits.file_bytes,
               "RLIMIT_NOFILE": limits.open_files, "RLIMIT_NPROC": limits.processes, "RLIMIT_CORE": 0}
    with tempfile.TemporaryDirectory(prefix="ttscale-sandbox-") as box:
        job = json.dumps({"program": program, "token": token, "dir": os.path.realpath(box), "limits": rlimits})
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HARNESS], cwd=box, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={"PATH": "/nonexistent", "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8"},
            start_new_session=True, close_fds=True,
        )
        try:
            out, err = proc.communicate(job.encode(), timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            return Outcome(False, "timeout")
        finally:
            _kill_group(proc)
    if proc.returncode == 0 and token.encode() in out:
        return Outcome(True, "passed")
    if proc.returncode < 0:
        return Outcome(False, f"killed by signal {-proc.returncode}")
    text = err.decode(errors="replace").strip().splitlines()
    return Outcome(False, text[-1][:200] if text else f"exited ({proc.returncode}) before its tests finished")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
