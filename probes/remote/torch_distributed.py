# Run torch.distributed on the target: `world_size` local ranks meet at 127.0.0.1, then
# all_reduce and broadcast a known tensor; report whether the results are right and how long
# each step took. torch is imported once, here (or already in the agent this script was forked
# from), and each rank is a fork of this process in a process group of its own (in this
# script's session, where the agent's sweep looks), named matrix-rank-N in `ps`: no rank
# imports torch again. Every rank is killed and reaped before
# the script answers, and a rank whose parent dies kills itself.
# Launched by Slurm (params["launch"] == "srun"), this script is one task of a job step and
# runs the one rank Slurm numbered it (SLURM_PROCID of SLURM_NTASKS, device SLURM_LOCALID); a
# failed rank makes it exit 1, so that srun ends the step's other tasks.
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

from _prelude import ObserveError, Unwell


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
        compute_ms = _compute(torch, device, synced)
        ddp_ok, resume_ok = _ddp(torch, dist, device, params["checkpoint"])
        say(stage="stepped", compute_ms=compute_ms, ddp_ok=ddp_ok, resume_ok=resume_ok)
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


def _ddp(torch, dist, device, checkpoint):
    """One DistributedDataParallel step on a tiny model, each rank with its own data: after
    it every rank must hold the same gradients (gradient synchronization). Then rank 0's
    checkpoint of the model and optimizer, which every rank resumes from, as a job restarted
    on other nodes does: the resumed copy's next step must land on the weights the
    uninterrupted one's does, on every rank. (ddp_ok, resume_ok)."""
    Linear, DDP = torch.nn.Linear, torch.nn.parallel.DistributedDataParallel
    torch.manual_seed(0)  # the same weights everywhere, as DDP's broadcast also ensures
    model = Linear(16, 4).to(device)
    ddp = DDP(model)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # state a resume must keep
    torch.manual_seed(dist.get_rank() + 1)  # different data on each rank
    batches = [torch.randn(8, 16, device=device) for _ in range(2)]
    ddp(batches[0]).square().sum().backward()
    synchronized = _same_everywhere(torch, dist, [p.grad for p in model.parameters()])
    sgd.step()
    sgd.zero_grad()
    state = _checkpoint(torch, dist, device, checkpoint, model, sgd)
    resumed = Linear(16, 4).to(device)
    resumed.load_state_dict(state["model"])
    resumed_sgd = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    resumed_sgd.load_state_dict(state["optimizer"])
    for net, optimizer in ((ddp, sgd), (DDP(resumed), resumed_sgd)):
        net(batches[1]).square().sum().backward()
        optimizer.step()
    kept = all(
        bool(torch.allclose(a, b, atol=1e-6))
        for a, b in zip(model.parameters(), resumed.parameters())
    )
    resumed_everywhere = _same_everywhere(torch, dist, list(resumed.parameters()))
    return synchronized, kept and resumed_everywhere


def _same_everywhere(torch, dist, tensors):
    """Whether every rank holds the same `tensors` (their sums, gathered and compared)."""
    mine = torch.stack([t.double().sum() for t in tensors])
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return all(bool(torch.allclose(other, mine)) for other in every)


def _checkpoint(torch, dist, device, path, model, optimizer):
    """Rank 0's {model, optimizer} state as every rank loads it: through the file `path`
    (storage every host must see) when given, else sent over the process group."""
    import io

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    rank = dist.get_rank()
    if path is None:
        sent = [None]
        if rank == 0:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            sent = [buffer.getvalue()]
        dist.broadcast_object_list(sent, src=0)
        return torch.load(io.BytesIO(sent[0]), map_location=device, weights_only=True)
    if rank == 0:
        try:
            with open(path + ".part", "wb") as handle:  # an OSError, not torch's own words
                torch.save(state, handle)
            os.replace(path + ".part", path)  # no rank reads half a file
        except OSError as exc:
            raise RuntimeError(
                f"cannot write the checkpoint to {path}: {exc.strerror} — `checkpoint_dir` "
                "must be a folder the first host can write"
            ) from None
    dist.barrier()
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the checkpoint rank 0 wrote to {path}: {exc.strerror} — "
            "`checkpoint_dir` must be storage every host sees (a shared filesystem)"
        ) from None
    dist.barrier()
    if rank == 0:
        os.remove(path)
    return loaded


def _rank(params, index, port, out, err, torch, dist):
    """In the forked child: become this process's `index`th rank and never return."""
    code = 1
    world = params["world"]
    rank, local = params["first_rank"] + index, params["first_local"] + index
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
POLL = 0.01  # which rank failed first is told by when each was seen to end
STAGES = {  # what a rank killed at the deadline was doing, by the last stage it reported
    None: "starting",
    "imported": "waiting for the rendezvous at {address}",
    "initialized": "running all_reduce and broadcast",
    "swept": "timing the compute step, the DDP step and resuming from a checkpoint",
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
    number = params["first_rank"] + rank  # the rank across all hosts
    return {"rank": number, "pid": pid, "code": None, "out": out, "err": err, "killed": False,
            "ended": None}  # fmt: skip


def _exit_code(status):
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _poll(rank):
    """The rank's exit code once it ended (-N: killed by signal N), reaping it; else None."""
    if rank["code"] is None:
        pid, status = os.waitpid(rank["pid"], os.WNOHANG)
        if pid:
            rank["code"], rank["ended"] = _exit_code(status), time.time()
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


def _placement(params, host):
    """(first rank, ranks in all, first device index, ranks to fork here, rendezvous port):
    from Slurm's numbering when srun launched this task, else from the host's place in the
    group (`node_rank` of `nodes`)."""
    if params.get("launch") == "srun":
        env = os.environ
        first, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        return first, world, int(env.get("SLURM_LOCALID", "0")), 1, params["port"]
    here, node_rank = params["world_size"], params.get("node_rank", 0)
    port = _port(params, host) if node_rank == 0 else params["port"]
    return node_rank * here, params.get("nodes", 1) * here, 0, here, port


def _checkpoint_path(folder, port):
    """The checkpoint file of this run in `folder` (named by the rendezvous port, which every
    host of the run shares and no other run has at once); None without a folder."""
    return os.path.join(folder, f"matrix-checkpoint-{port}.pt") if folder else None


def observe(params):
    host = socket.gethostname()
    started = time.monotonic()
    timeout = params["timeout"]
    torch, dist = _import_torch(host)
    first, world, first_local, forks, port = _placement(params, host)
    rank_params = {
        "backend": params["backend"],
        "elements": params["elements"],
        "sizes": params.get("sizes") or [params["elements"]],
        "iterations": params.get("iterations", 5),
        "deadline": params.get("deadline") or time.time() + timeout,
        "parent": os.getpid(),
        "first_rank": first,
        "first_local": first_local,
        "world": world,
        "local_world": params["world_size"],
        "master_addr": params.get("master_addr") or "127.0.0.1",
        "checkpoint": _checkpoint_path(params.get("checkpoint_dir"), port),
    }
    ranks, timed_out = [], False
    with tempfile.TemporaryDirectory() as folder:  # each rank's stdout and stderr
        try:
            for rank in range(forks):
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
    errors = _errors(ranks, reports, f"{rank_params['master_addr']}:{port}", timed_out)
    facts = {
        "backend": imported.get("backend", params["backend"]),
        "world_size": forks,
        "host": host,
        "port": port,
        "torch": imported.get("torch"),
        "init_ms": _slowest(reports, "init_ms"),
        "all_reduce_ms": _slowest(reports, "all_reduce_ms"),
        "broadcast_ms": _slowest(reports, "broadcast_ms"),
        "all_reduce_ok": done and all(said["all_reduce_ok"] for said in reports),
        "broadcast_ok": done and all(said["broadcast_ok"] for said in reports),
        "ddp_ok": done and all(said["ddp_ok"] for said in reports),
        "resume_ok": done and all(said["resume_ok"] for said in reports),
        "compute_ms": _slowest(reports, "compute_ms"),
        "sweep": _slowest_sweep(reports) if done else [],
        "per_rank": {
            str(rank["rank"]): {key: said.get(key) for key in TIMINGS}
            for rank, said in zip(ranks, reports)
        },
        "ranks": {str(rank): error for rank, error in errors.items()},
        "timed_out": timed_out,
        # when this host saw its first rank fail (this clock): the first host to fail is
        # the likely cause of the others' failures
        "failed_at": min((r["ended"] for r in ranks if r["code"] and r["ended"]), default=None),
    }
    wrong = not (facts["all_reduce_ok"] and facts["broadcast_ok"]) and done
    if params.get("launch") == "srun" and (errors or wrong):
        raise Unwell(facts)  # srun ends the step's other tasks, which would wait for this one
    return facts
