"""Several processes as one JAX program (``jax.distributed``), and a launcher for this machine.

JAX's multi-controller model: every process runs the same program, owns its
local devices, and ``jax.devices()`` lists the devices of all processes; a
``jax.sharding.Mesh`` over them makes collectives (``psum`` inside
``shard_map``) cross process boundaries.  mfjax adds no networking of its
own: :func:`initialize` calls :func:`jax.distributed.initialize` (with the
gloo CPU collectives on the CPU backend) and :func:`launch` starts ``N``
copies of a command on this machine with the coordinates in the
environment::

    mfjax launch -n 2 -- fit --run gd+armijo --iters 50      # 2 processes, 1 CPU device each
    python -m mfjax launch -n 4 --local-devices 2 -- fit ...  # 4 processes x 2 devices

Each process then builds its part of the data (for instance
:func:`mfjax.objective.shard_local_objective` from its own entries; the CLI
builds only the process's rows with ``mfjax.compare.make_problem(part=(k,
N))`` and the row-local :func:`mfjax.data.hash_split`) and runs the same
code as one process would; results replicated over the mesh are readable on
every process, and :func:`allgather_host` exchanges small host arrays
(counts, sums, checksums) exactly.

Environment (set by :func:`launch`, read by :func:`initialize`):
``MFJAX_COORDINATOR`` (``host:port`` of process 0), ``MFJAX_NUM_PROCESSES``,
``MFJAX_PROCESS_ID``, ``MFJAX_LOCAL_DEVICES`` (CPU devices per process).

References:
  The JAX authors, "Multi-host and multi-process environments"
  (``jax.distributed.initialize``), 2024.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

__all__ = ["COORDINATOR_ENV", "NUM_PROCESSES_ENV", "PROCESS_ID_ENV", "LOCAL_DEVICES_ENV",
           "initialize", "initialize_from_env", "is_initialized", "launch", "free_port", "allgather_host"]

COORDINATOR_ENV = "MFJAX_COORDINATOR"
NUM_PROCESSES_ENV = "MFJAX_NUM_PROCESSES"
PROCESS_ID_ENV = "MFJAX_PROCESS_ID"
LOCAL_DEVICES_ENV = "MFJAX_LOCAL_DEVICES"

_STATE = {"initialized": False}


def is_initialized() -> bool:
    """Whether :func:`initialize` ran in this process."""
    return _STATE["initialized"]


def _positive(name: str, value) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def initialize(coordinator: str, num_processes: int, process_id: int, *, local_devices: int | None = None,
               timeout_s: int = 120) -> None:
    """Join a ``num_processes``-process JAX program as process ``process_id``; call before any JAX work.

    On the CPU backend the cross-process collectives are gloo's
    (``jax_cpu_collectives_implementation``) and ``local_devices`` CPU
    devices are created per process.

    Raises:
      ValueError: a count or id out of range, or a malformed coordinator address.
      RuntimeError: JAX's backends already started in this process, or the
        coordinator did not answer within ``timeout_s`` (the message names it).
    """
    import jax

    n = _positive("num_processes", num_processes)
    pid = int(process_id)
    if not 0 <= pid < n:
        raise ValueError(f"process_id must be in [0, {n}), got {pid}")
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator must look like host:port, got {coordinator!r}")
    if is_initialized():
        raise RuntimeError("mfjax.core.distributed.initialize was already called in this process")
    try:
        if local_devices is not None:
            jax.config.update("jax_num_cpu_devices", _positive("local_devices", local_devices))
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=str(coordinator), num_processes=n, process_id=pid,
                                   initialization_timeout=int(timeout_s))
    except RuntimeError as e:
        raise RuntimeError(f"process {pid}/{n}: could not join the coordinator at {coordinator}: {e}") from e
    if jax.process_count() != n:  # pragma: no cover - jax checks this itself
        raise RuntimeError(f"the coordinator reports {jax.process_count()} processes, expected {n}")
    _STATE["initialized"] = True


def initialize_from_env(environ=None) -> bool:
    """:func:`initialize` from ``MFJAX_*`` variables (set by :func:`launch`); ``False`` when they are absent.

    A second call in an initialized process is a no-op (``True``) when the
    variables name the same process; otherwise ``RuntimeError``.
    """
    env = os.environ if environ is None else environ
    if NUM_PROCESSES_ENV not in env:
        return False
    missing = [k for k in (COORDINATOR_ENV, PROCESS_ID_ENV) if k not in env]
    if missing:
        raise ValueError(f"{NUM_PROCESSES_ENV} is set but {', '.join(missing)} is not (use mfjax launch)")
    if is_initialized():  # e.g. a script under mfjax launch that calls the CLI's main(): the same program
        import jax

        if (int(env[NUM_PROCESSES_ENV]), int(env[PROCESS_ID_ENV])) != (jax.process_count(), jax.process_index()):
            raise RuntimeError(f"already initialized as process {jax.process_index()}/{jax.process_count()}, "
                               f"but the environment says {env[PROCESS_ID_ENV]}/{env[NUM_PROCESSES_ENV]}")
        return True
    local = env.get(LOCAL_DEVICES_ENV)
    initialize(env[COORDINATOR_ENV], env[NUM_PROCESSES_ENV], env[PROCESS_ID_ENV],
               local_devices=None if local is None else int(local))
    return True


def allgather_host(x):
    """Every process's 1-D host array ``x`` (the same length and dtype everywhere), stacked ``(N, len)``, exactly.

    One :func:`jax.experimental.multihost_utils.process_allgather`; 64-bit
    values (float64 checksums of sums, int64 counts, hash words) travel as
    pairs of int32 words, since JAX without x64 would round them to 32 bits.
    Every process must call it (a collective); in one process it is
    ``x[None]`` without JAX.
    """
    import numpy as np

    a = np.ascontiguousarray(x).reshape(-1)
    import jax

    if jax.process_count() == 1:
        return a[None].copy()
    from jax.experimental import multihost_utils

    if a.dtype.itemsize not in (4, 8):
        raise ValueError(f"allgather_host takes 4- or 8-byte values, got {a.dtype}")
    words = a.view(np.int32)
    every = np.asarray(multihost_utils.process_allgather(words)).astype(np.int32, copy=False)
    return np.ascontiguousarray(every.reshape(jax.process_count(), -1)).view(a.dtype)


def free_port() -> int:
    """An unused TCP port on localhost (for the coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(stream, sink, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sink.write(prefix + line)
        sink.flush()
    stream.close()


def launch(command: Sequence[str], num_processes: int, *, local_devices: int = 1, port: int | None = None,
           timeout_s: float | None = None, env: Optional[dict] = None, stdout=None, stderr=None) -> int:
    """Run ``command`` as ``num_processes`` cooperating processes on this machine; return the worst exit code.

    Process 0 is the coordinator (``localhost:port``, a free port by
    default).  Process 0's standard output is passed through unchanged;
    every other line (process 0's stderr, the other processes' output) is
    prefixed with ``[pK]``.  When one process fails, or ``timeout_s``
    passes, the others are terminated (a collective would otherwise wait for
    the missing process forever) and the exit code is that failure's (124
    for a timeout).

    Args:
      command: the argv of each process, e.g. ``[sys.executable, "-m", "mfjax", "fit", ...]``.
      num_processes: ``N >= 1``.
      local_devices: CPU devices per process.
      port: the coordinator's port.
      timeout_s: wall-clock limit for the whole run.
      env: base environment (default ``os.environ``).
      stdout, stderr: text sinks (default ``sys.stdout`` / ``sys.stderr``).
    """
    n = _positive("num_processes", num_processes)
    _positive("local_devices", local_devices)
    if not command:
        raise ValueError("launch needs a command to run")
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    port = free_port() if port is None else int(port)
    base = dict(os.environ if env is None else env)
    procs, pumps = [], []
    for pid in range(n):
        e = dict(base, **{COORDINATOR_ENV: f"localhost:{port}", NUM_PROCESSES_ENV: str(n),
                          PROCESS_ID_ENV: str(pid), LOCAL_DEVICES_ENV: str(local_devices)})
        p = subprocess.Popen(list(command), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        pumps.append(threading.Thread(target=_pump, args=(p.stdout, out, "" if pid == 0 else f"[p{pid}] "),
                                      daemon=True))
        pumps.append(threading.Thread(target=_pump, args=(p.stderr, err, f"[p{pid}] "), daemon=True))
    for t in pumps:
        t.start()
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    code = 0
    while any([p.poll() is None for p in procs]):  # a list: poll every process, not only up to the first
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        late = deadline is not None and time.monotonic() > deadline
        if failed or late:
            code = failed[0] if failed else 124
            if late:
                err.write(f"mfjax launch: timeout after {timeout_s} s; stopping {n} processes\n")
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(0.05)
    for t in pumps:
        t.join(timeout=5)
    codes = [p.wait() for p in procs]
    return code or max(codes, key=abs)
