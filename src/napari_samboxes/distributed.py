"""``propose`` on Dask: the scheduler's address, the connection, the tasks.

No napari or Qt; ``dask.distributed`` is imported only when used (install
it with ``pip install 'napari-samboxes[distributed]'``).

- **Where.** A local cluster of ``--workers N`` processes, or a running
  scheduler: ``tcp://HOST:PORT`` (``HOST:PORT`` means the same; ``tls://``
  with Dask's TLS settings), or a scheduler file, the JSON file that
  ``dask scheduler --scheduler-file``, ``dask-mpi`` or
  ``Client.write_scheduler_file`` write (clusters started by
  ``dask-jobqueue`` or ``dask-kubernetes``). :func:`parse_scheduler`
  checks the argument before anything is loaded.
- **Reaching it.** Within ``timeout`` (10 s) or one line: a scheduler
  speaks first, so :func:`connect` opens the port, reads the first 8 bytes
  (the length of Dask's handshake) and refuses a port that says nothing or
  something else (another protocol's banner), before Dask's client, which
  would wait forever or try to allocate what the banner's bytes spell.
- **Tasks.** One per image: :func:`propose_task` runs
  :func:`napari_samboxes.batch.propose_one`, so a worker writes the same
  box table, log line and cache entry as the in-process run. A failure is
  returned as one line, never raised (no "Compute Failed" tracebacks in the
  workers' logs). Each worker process loads the model once
  (:func:`napari_samboxes.pipeline.get_model`).
- **Threads.** Before each task torch gets ``cores // threads`` threads (at
  least 1): ``cores`` as Dask counts them on the worker's machine (CPU
  affinity and cgroup quota), ``threads`` the Dask threads of all the
  workers on that machine. A machine never runs more torch threads than
  cores, whatever the number of workers and threads per worker.
- **Ctrl-C.** The local cluster's processes ignore it (they inherit
  ``SIG_IGN``); this process cancels the tasks and closes them.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .batch import Outcome, ProposeLog, failure_message, run_one
from .settings import Settings

__all__ = [
    "CONNECT_TIMEOUT",
    "DistributedError",
    "Scheduler",
    "close_client",
    "connect",
    "host_threads",
    "open_client",
    "parse_scheduler",
    "propose_task",
    "run_on_cluster",
]

#: Seconds to reach a scheduler (and to wait for its scheduler file).
CONNECT_TIMEOUT = 10.0
#: The longest handshake a scheduler sends first (it is some 200 bytes).
_HANDSHAKE_MAX = 1 << 20


class DistributedError(RuntimeError):
    """Dask is missing, or the cluster could not be started or reached."""


@dataclass(frozen=True)
class Scheduler:
    """A running scheduler: its address, or the scheduler file naming it."""

    address: str = ""
    file: Path | None = None

    def __str__(self) -> str:
        return self.address or f"the scheduler file {self.file}"


def _address(text: str, what: str) -> str:
    """``text`` as ``tcp://HOST:PORT`` (or ``tls://``); ValueError if it
    is not one."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", text.strip()
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"{what} {text!r}: only tcp:// or tls:// addresses")
    host, colon, port = rest.rstrip("/").rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        not colon
        or not bare
        or any(c in host for c in "/ \t")
        or (":" in bare and bare == host)
    ):
        raise ValueError(
            f"{what} {text!r}: give HOST:PORT, e.g. tcp://10.0.0.5:8786 "
            "([ADDRESS]:PORT for IPv6)"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return f"{scheme}://{host}:{int(port)}"


def parse_scheduler(address: str | None = None, file: str | None = None) -> Scheduler:
    """The scheduler of ``--scheduler ADDRESS`` or ``--scheduler-file PATH``.

    ``ADDRESS`` is ``tcp://HOST:PORT``, ``tls://HOST:PORT``, ``HOST:PORT``,
    or the path of an existing scheduler file. ``PATH`` may not exist yet
    (:func:`connect` waits for it), but its folder must.

    Raises
    ------
    ValueError
        With one sentence naming the option, for an empty or malformed
        argument.
    """
    if file is not None:
        path = Path(file)
        if not file.strip():
            raise ValueError("--scheduler-file is empty: give the path of a JSON file")
        if path.is_dir():
            raise ValueError(f"--scheduler-file {file} is a folder, not a file")
        if not path.parent.is_dir():
            raise ValueError(f"--scheduler-file {file}: no folder {path.parent}")
        return Scheduler(file=path)
    text = address or ""
    if not text.strip():
        raise ValueError(
            "--scheduler is empty: give tcp://HOST:PORT or a scheduler file"
        )
    if "://" not in text and Path(text).is_file():
        return Scheduler(file=Path(text))
    if "://" not in text and not text.rpartition(":")[2].isdigit():
        raise ValueError(
            f"--scheduler {text!r}: neither tcp://HOST:PORT nor an existing "
            "scheduler file"
        )
    return Scheduler(address=_address(text, "--scheduler"))


# ------------------------------------------------------------ connecting


def _read_scheduler_file(path: Path, deadline: float, timeout: float) -> str:
    """The address in a scheduler file, waiting for it until ``deadline``."""
    malformed_since = None
    while True:
        problem = f"no scheduler file at {path} after {timeout:g} s"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return _address(str(doc["address"]), f"the address in {path}")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            # a file being written: wait a little; else it is not one
            problem = f"{path} is not a Dask scheduler file ({_one_line(e)})"
            malformed_since = malformed_since or time.monotonic()
            if time.monotonic() - malformed_since > 1.0:
                raise DistributedError(problem) from None
        if time.monotonic() >= deadline:
            raise DistributedError(problem)
        time.sleep(0.05)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _probe(address: str, deadline: float, timeout: float) -> None:
    """Open the port; for tcp, read the first 8 bytes a scheduler sends."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    where = f"the scheduler at {address}"
    try:
        sock = socket.create_connection(
            (host.strip("[]"), int(port)),
            timeout=max(0.01, deadline - time.monotonic()),
        )
    except TimeoutError:
        raise DistributedError(
            f"cannot reach {where}: no answer within {timeout:g} s"
        ) from None
    except OSError as e:
        raise DistributedError(f"cannot reach {where}: {e.strerror or e}") from None
    with sock:
        if scheme != "tcp":  # TLS: the client speaks first
            return
        head = b""
        try:
            while len(head) < 8:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    raise DistributedError(
                        f"{address} closed the connection without a word: "
                        "not a Dask scheduler"
                    )
                head += chunk
        except TimeoutError:
            raise DistributedError(
                f"{address} accepted the connection but said nothing within "
                f"{timeout:g} s: not a Dask scheduler (or a stuck one)"
            ) from None
        except OSError as e:
            raise DistributedError(f"cannot reach {where}: {e.strerror or e}") from None
        (size,) = struct.unpack("<Q", head)
        if not 0 < size <= _HANDSHAKE_MAX:
            sock.settimeout(0.2)
            try:
                head += sock.recv(64)
            except OSError:
                pass
            said = head.decode("ascii", "replace")
            said = "".join(c if c.isprintable() else " " for c in said).strip()
            raise DistributedError(
                f"{address} is not a Dask scheduler: it answered {said[:60]!r}"
            )


def _client_within(address: str, deadline: float, timeout: float) -> Any:
    """Dask's client for ``address``, or an error once ``deadline`` passed
    (the client is made in a thread: its handshake has no time limit)."""
    from dask.distributed import Client

    box: dict[str, Any] = {}

    def start() -> None:
        try:
            left = max(1.0, deadline - time.monotonic())
            box["client"] = Client(address, timeout=f"{left}s")
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            box["error"] = e

    t = threading.Thread(target=start, name="napari-samboxes-connect", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()) + 1.0)
    if t.is_alive():
        raise DistributedError(
            f"the scheduler at {address} did not answer within {timeout:g} s"
        )
    if "error" in box:
        raise DistributedError(
            f"cannot reach the scheduler at {address}: {_one_line(box['error'])}"
        )
    return box["client"]


def connect(scheduler: Scheduler, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A ``dask.distributed.Client`` of a running scheduler, within
    ``timeout`` seconds (the scheduler file's wait included).

    Raises
    ------
    DistributedError
        Dask is not installed; no scheduler file appeared; the port is
        closed, silent or not a Dask scheduler's; one line each.
    """
    _need_dask()
    deadline = time.monotonic() + timeout
    address = scheduler.address
    if scheduler.file is not None:
        address = _read_scheduler_file(scheduler.file, deadline, timeout)
    _probe(address, deadline, timeout)
    return _client_within(address, deadline, timeout)


def _need_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError as e:
        raise DistributedError(
            "--workers and --scheduler need Dask: "
            "pip install 'napari-samboxes[distributed]'"
        ) from e


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started in the block ignore Ctrl-C (``SIG_IGN`` is
    inherited); this process gets it back afterwards."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main and old is not None:
            signal.signal(signal.SIGINT, old)


def _local_cluster(workers: int) -> Any:
    """A client of a new local cluster of ``workers`` processes."""
    _need_dask()
    from dask.distributed import Client, LocalCluster

    try:
        with _sigint_ignored(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Port 8787 is already in use"
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: None means 8787
                silence_logs=logging.CRITICAL,  # failures come back as lines
            )
    except (OSError, TimeoutError, ValueError) as e:
        raise DistributedError(f"cannot start a local cluster: {_one_line(e)}") from e
    return Client(cluster)


# ----------------------------------------------------------------- tasks


def host_threads(client: Any) -> dict[str, int]:
    """Dask threads of all workers, per machine (host address)."""
    from distributed.comm.addressing import get_address_host

    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # an older distributed: all workers by default
        info = client.scheduler_info()
    per: dict[str, int] = {}
    for addr, w in info.get("workers", {}).items():
        host = get_address_host(addr)
        per[host] = per.get(host, 0) + int(w.get("nthreads", 1))
    return per


def _set_threads(per_host: dict[str, int]) -> int:
    """Torch threads for a task on this worker (see the module docstring)."""
    from dask.system import CPU_COUNT
    from distributed import get_worker
    from distributed.comm.addressing import get_address_host

    try:
        worker = get_worker()
    except ValueError:  # not on a worker
        return 0
    import torch

    own = int(worker.state.nthreads)
    sharing = max(own, per_host.get(get_address_host(worker.address), own))
    torch.set_num_threads(max(1, CPU_COUNT // sharing))
    return int(torch.get_num_threads())


_load_lock = threading.Lock()


def propose_task(
    path: str,
    target: str,
    checkpoint: str,
    device: str,
    settings: Settings,
    cache_dir: str | None,
    out: str,
    fp: str,
    per_host: dict[str, int],
) -> Outcome:
    """One image on a worker: candidates written to ``target`` (logged in
    ``out``); what became of it, a failure included."""
    from .cache import CandidateCache
    from .pipeline import get_model

    threads = _set_threads(per_host)
    try:
        with _load_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said once, by the command
            model = get_model(checkpoint, device)  # once per worker process
    except Exception as e:  # noqa: BLE001 - every image would fail alike
        return Outcome(error=f"cannot load the model: {_one_line(e)}", setup=True)
    outcome = run_one(
        Path(path),
        Path(target),
        model,
        settings,
        CandidateCache(cache_dir),
        log=ProposeLog(out),
        fp=fp,
        progress=False,
    )
    return replace(outcome, threads=threads)


def open_client(
    *,
    workers: int | None = None,
    scheduler: Scheduler | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Any:
    """A ``dask.distributed.Client``: of a new local cluster of ``workers``
    processes, or of a running ``scheduler`` reached within ``timeout``
    seconds (:func:`connect`).

    Raises
    ------
    DistributedError
        Dask is not installed; the cluster cannot be started or reached.
    """
    if workers:
        return _local_cluster(workers)
    if scheduler is None:
        raise ValueError("open_client needs workers or a scheduler")
    return connect(scheduler, timeout)


def run_on_cluster(
    jobs: Sequence[tuple[Path, Path]],
    checkpoint: str | Path,
    device: str,
    settings: Settings,
    cache_dir: str | None,
    *,
    client: Any,
    out: str | Path,
    fp: str = "",
    close: bool = False,
    say: Callable[[str], object] | None = None,
) -> Generator[tuple[Path, Path, Outcome], None, None]:
    """Run ``(image, target)`` jobs on Dask; yield each as it finishes.

    Yields ``(image, target, outcome)``; a failed image is an outcome with
    an error (the others go on). ``client`` is a ``dask.distributed.Client``:
    :func:`open_client`'s, or yours (``Client(SLURMCluster(...))``,
    ``Client(KubeCluster(...))``). The checkpoint, images, ``out`` and the
    cache must be at the same paths on the workers (a shared disk); each
    table is logged in ``out`` under the fingerprint ``fp``
    (:mod:`napari_samboxes.batch`). Unfinished tasks are cancelled when the
    iterator is closed (Ctrl-C); ``close`` then closes the client and the
    cluster it started. ``say`` gets a sentence while no worker is there.

    Raises
    ------
    DistributedError
        The workers cannot load the model or import this package.
    """
    from dask.distributed import as_completed

    futures: dict[Any, tuple[Path, Path]] = {}
    try:
        per_host = host_threads(client)
        if not per_host and say is not None:
            say(f"no workers at {client.scheduler.address} yet: waiting for them")
        run = uuid.uuid4().hex[:8]
        for i, (p, t) in enumerate(jobs):
            fut = client.submit(
                propose_task,
                *(str(p), str(t), str(checkpoint), device, settings, cache_dir),
                *(str(out), fp, per_host),
                key=f"napari-samboxes-propose-{run}-{i}",
                pure=False,
            )
            futures[fut] = (p, t)
        for fut in as_completed(futures):
            p, t = futures[fut]
            try:
                outcome = fut.result()
            except ImportError as e:  # the package is not on the workers
                raise DistributedError(
                    f"the workers cannot run propose: {_one_line(e)} "
                    "(install napari-samboxes on them)"
                ) from None
            except Exception as e:  # noqa: BLE001 - a lost worker, say
                outcome = Outcome(error=failure_message(p, t, e))
            if outcome.setup:
                raise DistributedError(f"the workers {outcome.error}")
            yield p, t, outcome
    finally:
        left = [f for f in futures if not f.done()]
        if left:
            client.cancel(left)
        if close:
            close_client(client)


def close_client(client: Any) -> None:
    """Close a client, and the cluster it started (:func:`open_client`'s
    local cluster)."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
