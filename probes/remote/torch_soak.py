# torch.soak: train for many steps and watch memory and step time for a leak or a slowdown,
# and the wait for each batch for data-loader stalls.
import statistics
import time

from _memory import effective_memory
from _prelude import GB, ObserveError
from _torch import (
    Deadline,
    Trainer,
    load_workload,
    model_name,
    need_torch,
    proc_status,
    quiet,
    resolve_device,
    sync,
)

MB = 1024**2
SLOPE_POINTS = 120  # samples the slope is fitted on: pairwise slopes grow with the square


def _run_delay():
    """Seconds this thread has waited runnable for a CPU (the kernel's run delay, from
    /proc/thread-self/schedstat), None where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _rss():
    """This process's resident memory in bytes (Linux), or None elsewhere."""
    try:
        return proc_status("VmRSS")
    except OSError:
        return None


def _memory(device):
    """(rss, cuda allocated, cuda reserved) in bytes now; None where there is no such thing."""
    if device.type != "cuda":
        return _rss(), None, None
    torch = need_torch()
    return _rss(), torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)


def slope(values):
    """Theil–Sen slope of `values` per step: the median of the slopes between every pair of
    samples, so a one-off jump (the allocator growing an arena once) does not read as a
    steady leak, and steady growth does."""
    if len(values) > SLOPE_POINTS:
        stride = (len(values) - 1) / (SLOPE_POINTS - 1)
        picked = [(round(i * stride), values[round(i * stride)]) for i in range(SLOPE_POINTS)]
    else:
        picked = list(enumerate(values))
    pairs = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(picked)
        for x2, y2 in picked[i + 1 :]
        if x2 != x1
    ]
    return statistics.median(pairs) if pairs else 0.0


def _to(batch, device):
    """A loader's batch on the device (tensors inside tuples, lists and dicts too)."""
    if need_torch().is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to(value, device) for key, value in batch.items()}
    return batch


class _Batches:
    """The next batch: from the entrypoint's `loader` (started again when an epoch ends),
    else from its batch()."""

    def __init__(self, work, device):
        self.work, self.device, self.epochs = work, device, 0
        self.iterator = None

    def next(self):
        if self.work.loader is None:
            return self.work.batch()
        for _ in range(2):
            if self.iterator is None:
                self.iterator, self.epochs = iter(self.work.loader), self.epochs + 1
            try:
                return _to(next(self.iterator), self.device)
            except StopIteration:
                self.iterator = None
        raise ObserveError(f"the loader of {self.work.name} yields no batches")


def _soak(params, device, deadline):
    """Train until `steps` (or `seconds`) are done: per step the wait for its batch, the
    step's time, and memory after it."""
    work = load_workload(params, params["batch_size"], device)
    trainer = Trainer(work, params, device, params["lr"])
    batches = _Batches(work, device)
    waits, times, own, samples = [], [], [], []
    seconds, started = params.get("seconds"), time.monotonic()
    step = 0
    while step < params["steps"] if seconds is None else time.monotonic() - started < seconds:
        deadline.check(f"{step} steps done")
        began, delayed = time.perf_counter(), _run_delay()
        batch = batches.next()
        fetched = time.perf_counter()
        _, bad = trainer.step(batch)
        sync(device)
        ended = time.perf_counter()
        if delayed is not None:  # the step's time less its wait for a CPU another took
            own.append(ended - began - (_run_delay() - delayed))
        step += 1
        if bad is not None:
            raise ObserveError(
                f"training went non-finite ({bad}) at step {step}: see torch.train for why"
            )
        waits.append(fetched - began)
        times.append(ended - began)
        samples.append(_memory(device))
    return waits, times, own or None, samples, batches.epochs, time.monotonic() - started


def _limit(device, watched_now):
    """(bytes the watched memory may reach, where that comes from): on a GPU the device's
    total; on a CPU this process's RSS now plus what it can still allocate (its cgroup's
    limit counts), so a job's memory limit is what it runs out of."""
    if device.type == "cuda":
        total = need_torch().cuda.get_device_properties(device).total_memory
        return total, f"{device} total"
    found = effective_memory()
    if found["available"] is None:
        return None, None
    return watched_now + found["available"], found["source"]


def _projection(params, device, watched, walls):
    """When a run of `planned_steps` would run out of memory at the soak's growth rate."""
    planned = params.get("planned_steps")
    facts = {"planned_steps": planned, "memory_limit_gb": None, "limit_source": None,
             "projected_gb": None, "runs_out_at_step": None, "runs_out_after_hours": None,
             "oom_projected": None}  # fmt: skip
    if not planned or watched[0] is None:
        return facts
    limit, source = _limit(device, watched[-1])
    if limit is None:
        return facts
    per_step = max(slope(watched), 0.0)
    projected = watched[0] + per_step * planned
    facts.update(memory_limit_gb=round(limit / GB, 2), limit_source=source)
    facts.update(projected_gb=round(projected / GB, 2), oom_projected=projected > limit)
    if per_step > 0:
        step = int((limit - watched[0]) / per_step)
        facts["runs_out_at_step"] = step if step <= planned else None
        if step <= planned:
            hours = step * statistics.median(walls) / 3600
            facts["runs_out_after_hours"] = round(hours, 2)
    return facts


def _per_100(values):
    """MB per 100 steps of a series of byte counts; None when it was not measured."""
    if not values or values[0] is None:
        return None
    return round(slope(values) * 100 / MB, 3)


@quiet
def observe(params):
    torch = need_torch()
    device = resolve_device(params["device"])
    deadline = Deadline(params["max_seconds"])
    if device.type == "cpu":  # one thread, whose run delay is the step's: no sibling thread
        torch.set_num_threads(1)  # spins on a core another process took
    waits, times, own, samples, epochs, elapsed = _soak(params, device, deadline)
    warmup, window = params["warmup"], params["window"]
    measured = len(times) - warmup
    if measured < 2 * window:
        raise ObserveError(
            f"only {len(times)} steps in {elapsed:.1f}s, {measured} after {warmup} warm-up "
            f"steps: a first and a last window of {window} need {warmup + 2 * window} — raise "
            "steps (or seconds), or lower window"
        )
    # a step's own time: the wall clock less the time it waited for a CPU that another
    # process had (the machine's load), so sleeping, I/O and real work still count
    clock = "wall" if own is None else "own"
    kept_times = (times if own is None else own)[warmup:]
    kept = samples[warmup:]
    first = statistics.median(kept_times[:window]) * 1000
    last = statistics.median(kept_times[-window:]) * 1000
    median = statistics.median(kept_times) * 1000
    walls = times[warmup:]
    wall_drift = statistics.median(walls[-window:]) / max(statistics.median(walls[:window]), 1e-9)
    rss, allocated, reserved = ([sample[i] for sample in kept] for i in range(3))
    watched = allocated if device.type == "cuda" else rss
    drift = round(last / first, 3) if first else None
    stall = params["stall_ms"] / 1000
    stalls = [i + 1 for i, wait in enumerate(waits) if i >= warmup and wait > stall]
    return {
        "steps": len(times),
        "seconds": round(elapsed, 2),
        "warmup": warmup,
        "clock": clock,
        "step_ms_first": round(first, 3),
        "step_ms_last": round(last, 3),
        "step_time_drift": drift,
        "wall_time_drift": round(wall_drift, 3),
        "step_time_slope_pct": round(slope(kept_times) * 1000 * 100 / median * 100, 2),
        **_projection(params, device, watched, walls),
        "memory": "CUDA allocated" if device.type == "cuda" else "RSS",
        "memory_slope_mb": _per_100(watched),
        "memory_growth_mb": None
        if watched[0] is None
        else round((watched[-1] - watched[0]) / MB, 2),
        "rss_mb_start": None if rss[0] is None else round(rss[0] / MB, 1),
        "rss_mb_end": None if rss[-1] is None else round(rss[-1] / MB, 1),
        "rss_slope_mb": _per_100(rss),
        "cuda_allocated_slope_mb": _per_100(allocated),
        "cuda_reserved_slope_mb": _per_100(reserved),
        "loader": epochs > 0,
        "epochs": epochs or None,
        "data_wait_ms_p50": round(statistics.median(waits[warmup:]) * 1000, 3),
        "data_wait_ms_max": round(max(waits[warmup:]) * 1000, 3),
        "data_wait_share": round(sum(waits[warmup:]) / max(sum(kept_times), 1e-9), 4),
        "stalls": len(stalls),
        "stall_steps": stalls[:20],
        "device": str(device),
        "model": model_name(params),
    }
