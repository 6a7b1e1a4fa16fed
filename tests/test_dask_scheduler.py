"""``propose`` on Dask (issue 18 item 7): the scheduler's address checked
before anything loads, a port that is silent or speaks another protocol
refused within the timeout in one line, scheduler files, one line per failed
image, and torch threads that never outnumber the cores."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from napari_samboxes.cli import main
from napari_samboxes.distributed import (
    DistributedError,
    Scheduler,
    connect,
    parse_scheduler,
)
from napari_samboxes.formats.boxtable import read_box_table


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
        ("node12:8786", "tcp://node12:8786"),
        ("tls://sched.example.org:8786/", "tls://sched.example.org:8786"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_addresses_that_are_accepted(text, address):
    assert parse_scheduler(text) == Scheduler(address=address)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "--scheduler is empty"),
        ("   ", "--scheduler is empty"),
        ("http://host:8786", "only tcp:// or tls://"),
        ("tcp://host", "give HOST:PORT"),
        ("tcp://:8786", "give HOST:PORT"),
        ("tcp://host:99999", "port must be a number from 1 to 65535"),
        ("tcp://host:port", "port must be a number"),
        ("tcp://::1:8786", "give HOST:PORT"),
        ("sched.json", "neither tcp://HOST:PORT nor an existing scheduler file"),
        ("nowhere", "neither tcp://HOST:PORT nor an existing scheduler file"),
    ],
)
def test_addresses_that_are_refused(text, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        parse_scheduler(text)


def test_scheduler_files(tmp_path):
    f = tmp_path / "scheduler.json"
    f.write_text('{"address": "tcp://127.0.0.1:8786"}')
    assert parse_scheduler(str(f)) == Scheduler(file=f)  # a path to --scheduler
    later = tmp_path / "later.json"  # may appear later: its folder must exist
    assert parse_scheduler(file=str(later)) == Scheduler(file=later)
    for bad, says in (
        (str(tmp_path / "no" / "s.json"), "no folder"),
        (str(tmp_path), "is a folder"),
        ("", "is empty"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_scheduler(file=bad)


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--scheduler", ""], "--scheduler is empty"),
        (["--scheduler", "udp://h:1"], "only tcp:// or tls://"),
        (["--scheduler", "tcp://h:0"], "port must be a number from 1 to 65535"),
        (["--scheduler-file", "/no/such/folder/s.json"], "no folder"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--device", "tpu"], "--device 'tpu'"),
        (["--scheduler", "h:1", "--connect-timeout", "0"], "--connect-timeout"),
        (["--scheduler", "h:1", "--connect-timeout", "nan"], "--connect-timeout"),
    ],
)
def test_bad_cluster_options_exit_2_before_the_model_loads(
    tmp_path, capsys, option, says
):
    ckpt = tmp_path / "hello.pt"  # unreadable: loading it would say so
    ckpt.write_bytes(b"hello")
    argv = ["propose", "a.png", "--out", str(tmp_path / "o"), "--checkpoint"]
    rc = main([*argv, str(ckpt), *option])
    err = capsys.readouterr().err
    assert rc == 2 and says in err, err
    assert err.count("\n") == 1 and "hello.pt" not in err
    assert not (tmp_path / "o").exists()


def test_scheduler_and_scheduler_file_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["propose", "a.png", "--out", str(tmp_path), "--scheduler", "h:1"]
             + ["--scheduler-file", str(tmp_path / "s.json")])  # fmt: skip
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.fixture
def server() -> Iterator[Any]:
    """``start(banner)``: a local TCP server that accepts and then says
    ``banner`` (or nothing); its address."""
    socks: list[socket.socket] = []

    def start(banner: bytes = b"") -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        socks.append(s)

        def serve() -> None:
            while True:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                socks.append(c)
                if banner:
                    c.sendall(banner)

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    yield start
    for s in socks:
        s.close()


def test_a_silent_port_times_out_in_one_line(server):
    address = server()
    t = time.monotonic()
    with pytest.raises(DistributedError) as e:
        connect(Scheduler(address=address), timeout=1.0)
    took = time.monotonic() - t
    assert 0.9 < took < 3.0  # Dask's own client waited forever
    assert str(e.value) == (
        f"{address} accepted the connection but said nothing within 1 s: "
        "not a Dask scheduler (or a stuck one)"
    )


def test_another_protocols_banner_is_one_line(server):
    address = server(b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n")
    t = time.monotonic()
    with pytest.raises(DistributedError) as e:
        connect(Scheduler(address=address), timeout=5.0)
    assert time.monotonic() - t < 2.0
    assert str(e.value) == (  # Dask's client: "Unable to allocate 2.82 EiB"
        f"{address} is not a Dask scheduler: it answered "
        "'SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6'"
    )


def test_a_closed_port_and_a_missing_scheduler_file(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    with pytest.raises(DistributedError, match="cannot reach the scheduler at"):
        connect(Scheduler(address=f"tcp://127.0.0.1:{port}"), timeout=2.0)
    t = time.monotonic()
    with pytest.raises(DistributedError, match="no scheduler file at .* after 0.5 s"):
        connect(Scheduler(file=tmp_path / "s.json"), timeout=0.5)
    assert time.monotonic() - t < 2.0
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(DistributedError, match="bad.json is not a Dask scheduler"):
        connect(Scheduler(file=bad), timeout=5.0)


def test_the_command_says_one_line_for_a_silent_scheduler(
    server, tmp_path, structured_ckpt, capsys
):
    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "a.png")
    address = server()
    rc = main(
        ["propose", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]
        + ["--checkpoint", str(structured_ckpt), "--scheduler", address]
        + ["--connect-timeout", "1"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [
        f"napari-samboxes: {address} accepted the connection but said nothing "
        "within 1 s: not a Dask scheduler (or a stuck one)"
    ]  # nothing loaded: no "not the official checkpoint" line


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A client of a real local cluster in this process: ``(workers,
    threads per worker)`` from the test's parameter, else one worker with
    two threads."""
    distributed = pytest.importorskip("dask.distributed")
    import torch

    workers, per_worker = getattr(request, "param", (1, 2))
    threads = torch.get_num_threads()
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=per_worker,
            processes=False,
            dashboard_address=":0",
        ) as c,
        distributed.Client(c) as client,
    ):
        yield client
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "cluster", [(1, 2), (2, 1)], indirect=True, ids=["1x2-threads", "2x1-thread"]
)
def test_tasks_never_run_more_torch_threads_than_cores(
    cluster, tmp_path, photo, structured_ckpt
):
    from dask.system import CPU_COUNT

    from napari_samboxes.distributed import host_threads, run_on_cluster
    from napari_samboxes.settings import DEFAULTS

    jobs = []
    for i in range(2):
        Image.fromarray(photo[::4, ::4]).save(tmp_path / f"p{i}.png")
        jobs.append((tmp_path / f"p{i}.png", tmp_path / "o" / f"p{i}.csv"))
    (tmp_path / "o").mkdir()
    assert sum(host_threads(cluster).values()) == 2
    results = list(
        run_on_cluster(
            jobs,
            structured_ckpt,
            "cpu",
            DEFAULTS.with_(points_per_side=2),
            str(tmp_path / "c"),
            client=cluster,
            out=tmp_path / "o",
        )
    )
    assert [o.error for _, _, o in results] == ["", ""]
    # 2 Dask threads on this machine (in 1 or 2 workers): half the cores each
    assert {o.threads for _, _, o in results} == {max(1, CPU_COUNT // 2)}
    for _, t in jobs:
        assert len(read_box_table(t)) > 0


def test_workers_that_cannot_load_the_model_stop_the_run_in_one_line(
    cluster, tmp_path, synthetic
):
    from napari_samboxes.distributed import run_on_cluster
    from napari_samboxes.settings import DEFAULTS

    Image.fromarray(synthetic).save(tmp_path / "s.png")
    jobs = [(tmp_path / "s.png", tmp_path / "s.csv")] * 3
    with pytest.raises(DistributedError) as e:
        list(
            run_on_cluster(
                jobs,
                tmp_path / "not-on-the-workers.pt",
                "cpu",
                DEFAULTS.with_(points_per_side=1),
                None,
                client=cluster,
                out=tmp_path,
            )
        )
    said = str(e.value)
    assert said.startswith("the workers cannot load the model: ")
    assert "not-on-the-workers.pt" in said and "\n" not in said


def test_a_scheduler_file_runs_propose(tmp_path, synthetic, structured_ckpt):
    distributed = pytest.importorskip("dask.distributed")
    import torch

    Image.fromarray(synthetic[::2, ::2]).save(tmp_path / "s.png")
    sf = tmp_path / "scheduler.json"
    threads = torch.get_num_threads()
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            protocol="tcp",  # a real port, as on a cluster
            dashboard_address=":0",
        ) as lc,
        distributed.Client(lc) as client,
    ):
        client.write_scheduler_file(str(sf))
        for option in ("--scheduler-file", "--scheduler"):
            out = tmp_path / option.strip("-")
            rc = main(
                ["propose", str(tmp_path / "s.png"), "--out", str(out)]
                + ["--checkpoint", str(structured_ckpt), "--points-per-side", "2"]
                + [option, str(sf)]
            )
            assert rc == 0 and len(read_box_table(out / "s.csv")) > 0
    torch.set_num_threads(threads)


def test_local_workers_say_one_line_per_failed_image_and_nothing_else(
    tmp_path, photo, structured_ckpt
):
    pytest.importorskip("dask.distributed")
    from test_propose_safety import run_propose, stderr_lines

    Image.fromarray(photo[::4, ::4]).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = run_propose(
        ["propose", str(tmp_path / "good.png"), str(tmp_path / "broken.png")]
        + ["--out", str(tmp_path / "o"), "--checkpoint", str(structured_ckpt)]
        + ["--points-per-side", "2", "--workers", "2", "--device", "cpu"]
    )
    _, err = proc.communicate(timeout=600)
    lines = stderr_lines(err)
    assert proc.returncode == 1
    assert len(lines) == 3, lines  # no "Compute Failed", no worker warnings
    assert "warning: " in lines[0] and "not the official" in lines[0]
    assert lines[1] == (
        f"napari-samboxes: {tmp_path / 'broken.png'}: cannot read image: "
        "not an image file Pillow can read"
    )
    assert lines[2] == "napari-samboxes: 1 of 2 images failed"
    assert len(read_box_table(tmp_path / "o" / "good.csv")) > 0
