# Run torch.distributed on the target: `world_size` local ranks meet at 127.0.0.1, then
# all_reduce and broadcast a known tensor; report whether the results are right and how long
# each step took. torch is imported once, here (or already in the agent this script was forked
# from), and each rank is a fork of this process in a process group of its own (in this
# script's session, where the agent's sweep looks), named matrix-rank-N in `ps`: no rank
# imports torch again. Every rank is killed and reaped before
# the script answers, and a rank whose parent dies kills itself.
import contextlib
import datetime
import errno
import json
import os
import signal
import socket
import sys
import tempfile
import time

from _prelude import ObserveError


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def die_with_parent(parent):
    # no rank may outlive the probe, also when a timeout kills the probe's script
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    else:
        import threading

        def watch():
            while os.getppid() == parent:
                time.sleep(0.2)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def name_process(name):
    """What `ps` and `top` show for this process (Linux; elsewhere nothing changes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def brief(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def unusable(backend, world, torch, dist):
    host = socket.gethostname()
    if backend == "nccl":
        if torch.version.cuda is None:
            return (
                f"backend nccl needs CUDA, but torch {torch.__version__} on {host} is a CPU-only "
                "build — use `backend: gloo` (or auto), or install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            return (
                f"backend nccl needs CUDA, but no GPU is usable on {host} (torch.cuda."
                "is_available() is false) — check the driver with nvidia-smi, or use "
                "`backend: gloo`"
            )
        if not dist.is_nccl_available():
            return (
                f"torch {torch.__version__} on {host} was built without NCCL — use `backend: gloo`"
            )
        gpus = torch.cuda.device_count()
        if gpus < world:
            return (
                f"backend nccl needs one GPU per rank, but {host} shows {gpus} GPUs to "
                f"{world} ranks — lower `world_size` or check CUDA_VISIBLE_DEVICES"
            )
    elif not dist.is_gloo_available():
        return f"torch {torch.__version__} on {host} was built without gloo — use `backend: nccl`"
    return None


def ms(started):
    return round((time.perf_counter() - started) * 1000, 2)


def rank_main(params, rank, local, world, torch, dist):
    """One rank (`local` among this host's), in its own process: its events go to stdout as
    JSON lines."""
    backend, here = params["backend"], params["local_world"]
    if backend == "auto":
        cuda = torch.cuda.is_available() and dist.is_nccl_available()
        backend = "nccl" if cuda and torch.cuda.device_count() >= here else "gloo"
    why = unusable(backend, here, torch, dist)
    if why:
        say(unusable=why)
        return 2
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)

    def synced(started):
        if backend == "nccl":
            torch.cuda.synchronize(device)
        return ms(started)

    say(stage="imported", backend=backend, torch=torch.__version__)
    left = params["deadline"] - time.time() - 2  # torch's own error first, then the kill
    timeout = datetime.timedelta(seconds=max(left, 1.0))
    try:
        started = time.perf_counter()
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
        say(stage="initialized", init_ms=ms(started))
        n = params["elements"]
        x = torch.full((n,), float(rank + 1), device=device)
        dist.all_reduce(x)  # the first collective also connects the ranks: not timed
        x.fill_(float(rank + 1))
        started = time.perf_counter()
        dist.all_reduce(x)
        all_reduce_ms = synced(started)
        all_reduce_ok = bool((x == world * (world + 1) / 2).all())
        expected = torch.arange(n, dtype=torch.float32, device=device)
        y = expected.clone() if rank == 0 else torch.zeros(n, device=device)
        started = time.perf_counter()
        dist.broadcast(y, src=0)
        broadcast_ms = synced(started)
        broadcast_ok = bool(torch.equal(y, expected))
        say(stage="swept", sweep=_sweep(params, torch, dist, device, synced))
        say(
            stage="stepped",
            compute_ms=_compute(torch, device, synced),
            ddp_ok=_ddp(torch, dist, device),
        )
        dist.destroy_process_group()
    except Exception as exc:
        say(error=brief(exc))
        return 1
    say(
        stage="done",
        all_reduce_ok=all_reduce_ok,
        all_reduce_ms=all_reduce_ms,
        broadcast_ok=broadcast_ok,
        broadcast_ms=broadcast_ms,
    )
    return 0


def _sweep(params, torch, dist, device, synced):
    """[{elements, ms}]: the median all_reduce time of float32 tensors of each size, after
    one untimed round (nccl-tests' way of measuring bus bandwidth)."""
    found = []
    for n in params["sizes"]:
        x = torch.ones(n, device=device)
        dist.all_reduce(x)
        times = []
        for _ in range(params["iterations"]):
            started = time.perf_counter()
            dist.all_reduce(x)
            times.append(synced(started))
        found.append({"elements": n, "ms": sorted(times)[len(times) // 2]})
    return found


def _compute(torch, device, synced):
    """Milliseconds of the same fixed matmul work on every rank: a slow host stands out here,
    where in a collective every rank waits for the slowest."""
    torch.manual_seed(0)
    a = torch.randn(256, 256, device=device)
    started = time.perf_counter()
    for _ in range(20):
        a = torch.tanh(a @ a)
    return synced(started)


def _ddp(torch, dist, device):
    """One DistributedDataParallel step on a tiny model, each rank with its own data: after
    it every rank must hold the same gradients (their sums are gathered and compared)."""
    torch.manual_seed(0)  # the same weights everywhere, as DDP's broadcast also ensures
    model = torch.nn.Linear(16, 4).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    torch.manual_seed(dist.get_rank() + 1)  # different data on each rank
    ddp(torch.randn(8, 16, device=device)).square().sum().backward()
    mine = torch.stack([p.grad.double().sum() for p in model.parameters()]).to(device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return all(bool(torch.allclose(other, mine)) for other in every)


def _rank(params, local, port, out, err, torch, dist):
    """In the forked child: become this host's rank `local` and never return."""
    code = 1
    world = params["nodes"] * params["local_world"]
    rank = params["node_rank"] * params["local_world"] + local
    try:
        os.setpgid(0, 0)
        die_with_parent(params["parent"])
        name_process(f"matrix-rank-{rank}")
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, out), (2, err)):  # the rank keeps its own copies
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 (as python's own)
        os.environ.update(
            MASTER_ADDR=params["master_addr"],
            MASTER_PORT=str(port),
            RANK=str(rank),
            LOCAL_RANK=str(local),
            WORLD_SIZE=str(world),
        )
        code = rank_main(params, rank, local, world, torch, dist)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


TIMINGS = ("init_ms", "all_reduce_ms", "broadcast_ms", "compute_ms")  # each rank's, in ms
AFTER_FAILURE = 3  # seconds the other ranks get to report their side once one rank failed
POLL = 0.05
STAGES = {  # what a rank killed at the deadline was doing, by the last stage it reported
    None: "starting",
    "imported": "waiting for the rendezvous at {address}",
    "initialized": "running all_reduce and broadcast",
    "swept": "timing the compute step and the DDP step",
    "stepped": "ending the process group",
}


def _in_use(port, host):
    return f"port {port} is in use on {host} — pick another `port` or stop the process holding it"


def _port(params, host):
    """The rendezvous port: `port` when given and free, else one the kernel hands out."""
    with socket.socket() as sock:
        if params.get("port") is None:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's TCPStore does
        try:
            sock.bind(("", params["port"]))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ObserveError(_in_use(params["port"], host)) from None
            raise ObserveError(
                f"cannot bind port {params['port']} on {host}: {exc.strerror} — pick another `port`"
            ) from None
        return params["port"]


def _start(rank, port, params, folder, torch, dist):
    out, err = (os.path.join(folder, f"{rank}.{stream}") for stream in ("out", "err"))
    for stream in (sys.stdout, sys.stderr):  # nothing buffered here may be written twice
        stream.flush()
    pid = os.fork()
    if pid == 0:
        _rank(params, rank, port, out, err, torch, dist)
    number = params["node_rank"] * params["local_world"] + rank  # the rank across all hosts
    return {"rank": number, "pid": pid, "code": None, "out": out, "err": err, "killed": False}


def _exit_code(status):
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _poll(rank):
    """The rank's exit code once it ended (-N: killed by signal N), reaping it; else None."""
    if rank["code"] is None:
        pid, status = os.waitpid(rank["pid"], os.WNOHANG)
        if pid:
            rank["code"] = _exit_code(status)
    return rank["code"]


def _wait(ranks, deadline):
    """Until every rank exits, or AFTER_FAILURE seconds after one failed; true when the
    deadline came first."""
    failed_at = None
    while True:
        running = [r for r in ranks if _poll(r) is None]  # polls every rank
        now = time.monotonic()
        if not running:
            return False
        if now >= deadline:
            return True
        if failed_at is None and any(r["code"] for r in ranks):
            failed_at = now
        if failed_at is not None and now - failed_at >= AFTER_FAILURE:
            return False
        time.sleep(POLL)


def _stop(ranks):
    """Kill the process group of every rank still running, then reap them all."""
    for rank in ranks:
        if _poll(rank) is None:
            rank["killed"] = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rank["pid"], signal.SIGKILL)
    for rank in ranks:
        if rank["code"] is None:
            rank["code"] = _exit_code(os.waitpid(rank["pid"], 0)[1])


def _read(path):
    with open(path, "rb") as handle:
        return handle.read().decode(errors="replace")


def _report(rank):
    """What the rank said on stdout (its JSON events, merged) and the tail of its stderr."""
    said = {}
    for line in _read(rank["out"]).splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a library printing to stdout
        if isinstance(event, dict):
            said.update(event)
    said["stderr"] = _read(rank["err"]).strip().splitlines()[-1:]
    return said


def _exit_text(code, stderr):
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited {code}" + (f": {stderr[0]}" if stderr else " without a result")


def _errors(ranks, reports, address, timed_out):
    """{rank: what went wrong} for every rank that did not finish."""
    first = next((r["rank"] for r in ranks if not r["killed"] and r["code"]), None)
    errors = {}
    for rank, said in zip(ranks, reports):
        if rank["killed"]:
            doing = STAGES[said.get("stage")].format(address=address)
            cause = "at the deadline" if timed_out else f"after rank {first} failed"
            errors[rank["rank"]] = f"killed {cause} while {doing}"
        elif said.get("error"):
            errors[rank["rank"]] = said["error"]
        elif rank["code"]:
            errors[rank["rank"]] = _exit_text(rank["code"], said["stderr"])
    return errors


def _ranks(count):
    return f"{count} rank{'s' if count != 1 else ''}"


def _problem(facts, errors, timed_out, timeout):
    if errors:
        ranks = "; ".join(f"rank {rank}: {error}" for rank, error in sorted(errors.items()))
        text = (
            f"torch.distributed ({facts['backend']}, {_ranks(facts['world_size'])}) failed: {ranks}"
        )
        if timed_out:
            text += (
                f" — not done within {timeout:g}s: a rank that never joins the rendezvous "
                "crashed or cannot reach MASTER_ADDR; raise `timeout` if importing torch is slow "
                "on this host"
            )
        return text
    wrong = [name for name in ("all_reduce", "broadcast") if not facts[f"{name}_ok"]]
    if wrong:
        return (
            f"{' and '.join(wrong)} returned wrong values over {facts['backend']} — the "
            "communication library is broken; reinstall torch (and NCCL) on this host"
        )
    return None


def _slowest_sweep(reports):
    """Each size's slowest rank: a collective is as fast as its slowest member."""
    sweeps = [said["sweep"] for said in reports]
    return [
        {"elements": row["elements"], "ms": max(sweep[i]["ms"] for sweep in sweeps)}
        for i, row in enumerate(sweeps[0])
    ]


def _slowest(reports, key):
    values = [said.get(key) for said in reports]
    return max(values) if values and None not in values else None


def _import_torch(host):
    try:
        import torch
        import torch.distributed as dist
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise ObserveError(f"import torch failed on {host}: {brief(exc)}") from None
        raise ObserveError(
            f"torch is not installed for {sys.executable} on {host} — install it there "
            "(pip install torch) or set the target's `python` to an interpreter that has it"
        ) from None
    except Exception as exc:  # an install that is there but broken (missing CUDA libraries)
        raise ObserveError(f"import torch failed on {host}: {brief(exc)}") from None
    return torch, dist


def observe(params):
    host = socket.gethostname()
    started = time.monotonic()
    world, timeout = params["world_size"], params["timeout"]
    torch, dist = _import_torch(host)
    node_rank = params.get("node_rank", 0)
    port = _port(params, host) if node_rank == 0 else params["port"]
    rank_params = {
        "backend": params["backend"],
        "elements": params["elements"],
        "sizes": params.get("sizes") or [params["elements"]],
        "iterations": params.get("iterations", 5),
        "deadline": params.get("deadline") or time.time() + timeout,
        "parent": os.getpid(),
        "nodes": params.get("nodes", 1),
        "node_rank": node_rank,
        "local_world": world,
        "master_addr": params.get("master_addr") or "127.0.0.1",
    }
    ranks, timed_out = [], False
    with tempfile.TemporaryDirectory() as folder:  # each rank's stdout and stderr
        try:
            for rank in range(world):
                ranks.append(_start(rank, port, rank_params, folder, torch, dist))
            timed_out = _wait(ranks, started + timeout)
        finally:
            _stop(ranks)
        reports = [_report(rank) for rank in ranks]
    for said in reports:
        if said.get("unusable"):
            raise ObserveError(said["unusable"])
    if any("EADDRINUSE" in said.get("error", "") for said in reports):
        raise ObserveError(_in_use(port, host))
    imported = next((said for said in reports if said.get("backend")), {})
    done = all(said.get("stage") == "done" for said in reports)
    facts = {
        "backend": imported.get("backend", params["backend"]),
        "world_size": world,
        "host": host,
        "port": port,
        "torch": imported.get("torch"),
        "init_ms": _slowest(reports, "init_ms"),
        "all_reduce_ms": _slowest(reports, "all_reduce_ms"),
        "broadcast_ms": _slowest(reports, "broadcast_ms"),
        "all_reduce_ok": done and all(said["all_reduce_ok"] for said in reports),
        "broadcast_ok": done and all(said["broadcast_ok"] for said in reports),
        "ddp_ok": done and all(said["ddp_ok"] for said in reports),
        "compute_ms": _slowest(reports, "compute_ms"),
        "sweep": _slowest_sweep(reports) if done else [],
        "per_rank": {
            str(rank["rank"]): {key: said.get(key) for key in TIMINGS}
            for rank, said in zip(ranks, reports)
        },
    }
    errors = _errors(ranks, reports, f"{rank_params['master_addr']}:{port}", timed_out)
    facts["ranks"] = {str(rank): error for rank, error in errors.items()}
    facts["problem"] = _problem(facts, errors, timed_out, timeout)
    return facts
