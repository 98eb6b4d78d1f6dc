# torch.soak: train for many steps and watch memory and step time for a leak or a slowdown,
# and the wait for each batch for data-loader stalls.
import statistics
import time

from _prelude import ObserveError
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
    waits, times, samples = [], [], []
    seconds, started = params.get("seconds"), time.monotonic()
    step = 0
    while step < params["steps"] if seconds is None else time.monotonic() - started < seconds:
        deadline.check(f"{step} steps done")
        began = time.perf_counter()
        batch = batches.next()
        fetched = time.perf_counter()
        _, bad = trainer.step(batch)
        sync(device)
        ended = time.perf_counter()
        step += 1
        if bad is not None:
            raise ObserveError(
                f"training went non-finite ({bad}) at step {step}: see torch.train for why"
            )
        waits.append(fetched - began)
        times.append(ended - began)
        samples.append(_memory(device))
    return waits, times, samples, batches.epochs, time.monotonic() - started


def _per_100(values):
    """MB per 100 steps of a series of byte counts; None when it was not measured."""
    if not values or values[0] is None:
        return None
    return round(slope(values) * 100 / MB, 3)


@quiet
def observe(params):
    need_torch()
    device = resolve_device(params["device"])
    deadline = Deadline(params["max_seconds"])
    waits, times, samples, epochs, elapsed = _soak(params, device, deadline)
    warmup, window = params["warmup"], params["window"]
    measured = len(times) - warmup
    if measured < 2 * window:
        raise ObserveError(
            f"only {len(times)} steps in {elapsed:.1f}s, {measured} after {warmup} warm-up "
            f"steps: a first and a last window of {window} need {warmup + 2 * window} — raise "
            "steps (or seconds), or lower window"
        )
    kept_times, kept = times[warmup:], samples[warmup:]
    first = statistics.median(kept_times[:window]) * 1000
    last = statistics.median(kept_times[-window:]) * 1000
    median = statistics.median(kept_times) * 1000
    rss, allocated, reserved = ([sample[i] for sample in kept] for i in range(3))
    watched = allocated if device.type == "cuda" else rss
    drift = round(last / first, 3) if first else None
    stall = params["stall_ms"] / 1000
    stalls = [i + 1 for i, wait in enumerate(waits) if i >= warmup and wait > stall]
    return {
        "steps": len(times),
        "seconds": round(elapsed, 2),
        "warmup": warmup,
        "step_ms_first": round(first, 3),
        "step_ms_last": round(last, 3),
        "step_time_drift": drift,
        "step_time_slope_pct": round(slope(kept_times) * 1000 * 100 / median * 100, 2),
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
