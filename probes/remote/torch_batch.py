# torch.batch_size: does the configured batch fit, and what is the largest that does? The
# configured size is tried first, so its answer comes at the cost of one trial. Then sizes double
# until one does not fit and the search bisects, trying only multiples of `multiple_of`. On CUDA
# trials run here and catch OutOfMemoryError; on CPU each runs in a forked child whose peak RSS
# growth is held against the effective memory (a cgroup limit counts). A trial fits when it
# leaves `headroom` of the limit free. The search stops before a trial would run past
# max_seconds and answers with the best bound found.
import ctypes
import gc
import json
import math
import os
import socket
import time

from _memory import effective_memory
from _prelude import GB, ObserveError, gb
from _torch import (
    OPTIMIZERS,
    Trainer,
    describe,
    is_oom,
    load_workload,
    model_name,
    need_torch,
    peak_bytes,
    peak_start,
    quiet,
    resolve_device,
    sync,
)

LR = 1e-3  # the learning rate does not change a step's memory
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _step_peak(params, device, batch_size):
    """Peak bytes of one training step at batch_size (fresh model and optimizer); None on OOM."""
    baseline = peak_start(device)
    try:
        work = load_workload(params, batch_size, device)
        Trainer(work, params, device, LR).step()
        sync(device)
    except Exception as exc:
        if not is_oom(exc):
            raise
        return None
    return peak_bytes(device, baseline)


# How much longer than the last trial scaled by size the next may take: on CPU, batch 2048
# took 1.7× what batch 1024 scaled by 2 predicted (cache and page-fault effects).
MARGIN = 2.0


def _in_child(fn):
    """fn() in a forked child, so its peak memory is its own and nothing it allocated stays.
    It runs on one thread: memory is measured, not speed, and one thread is cheaper and
    repeatable. A child the kernel killed (its OOM killer) counts as out of memory."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        need_torch().set_num_threads(1)
        _fixed_mmap_threshold()
        try:
            reply = {"value": fn()}
        except ObserveError as exc:
            reply = {"error": str(exc)}
        except BaseException as exc:
            reply = {"error": describe(exc)}
        with os.fdopen(write, "w") as pipe:
            json.dump(reply, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        return None
    reply = json.loads(data)
    if "error" in reply:
        raise ObserveError(reply["error"])
    return reply["value"]


def _fixed_mmap_threshold():
    """glibc moves its mmap threshold up as large blocks are freed, so whether a tensor lands
    on the heap (and stays resident after free) depends on what ran before: peak RSS then
    varies by megabytes from run to run. A fixed threshold maps every large block and unmaps it
    on free, so the same step measures the same. A no-op off glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    except (OSError, AttributeError):
        pass


class Grid:
    """The sizes the search may try: every size below `step`, multiples of it above, up to
    `cap`. Trying only these makes runs agree at that granularity."""

    def __init__(self, step, cap):
        self.step, self.cap = step, cap // step * step

    def down(self, size):
        return size if size < self.step else size // self.step * self.step

    def up(self, size):
        return size if size < self.step else math.ceil(size / self.step) * self.step

    def between(self, low, high):
        """A size strictly between low and high near their middle, or None."""
        middle = (low + high) // 2
        for size in (self.down(middle), self.up(middle)):
            if low < size < high:
                return size
        return None


def _search(fits, configured, grid, affordable):
    """(largest size known to fit, smallest known not to, complete) under the assumption that
    a bigger batch never needs less memory. `affordable(size)` says whether there is time to
    try it; when there is not, the search ends with the bounds it has."""
    low, high = (configured, None) if fits(configured) else (0, configured)
    while high is None and low < grid.cap:
        size = min(max(grid.up(low * 2), 1), grid.cap)
        if not affordable(size):
            return low, high, False
        low, high = (size, None) if fits(size) else (low, size)
    while high is not None:
        size = grid.between(low, high)
        if size is None:
            break
        if not affordable(size):
            return low, high, False
        low, high = (size, high) if fits(size) else (low, size)
    return low, high, True


def _limit(params, device):
    """(bytes a step may use before headroom, where that figure came from)."""
    if params.get("memory_limit_gb"):
        return params["memory_limit_gb"] * GB, "memory_limit_gb"
    if device.type == "cuda":
        total = need_torch().cuda.get_device_properties(device).total_memory
        return total, f"CUDA device {device}"
    found = effective_memory()
    return found["available"], found["source"]


def _problem(configured, trial, usable, limit, source, largest, complete):
    """Why the configured batch does not fit, and what does."""
    if trial["peak_gb"] is None:
        why = f"Batch size {configured} runs out of memory"
    else:
        why = (
            f"Batch size {configured} needs {trial['peak_gb']:g}GB, over {gb(usable):g}GB "
            f"(what the headroom leaves of {gb(limit):g}GB from {source})"
        )
    if largest == 0:
        return f"{why}: not even batch size 1 fits"
    found = "the largest that fits is" if complete else "the search ran out of time; at least"
    return f"{why}: {found} {largest}"


@quiet
def observe(params):
    torch = need_torch()
    device = resolve_device(params["device"])
    end = time.monotonic() + params["max_seconds"]
    if device.type == "cpu":
        if peak_start(device) is None:
            raise ObserveError(
                f"on CPU the search measures peak RSS through /proc/self/clear_refs, which "
                f"{socket.gethostname()} lacks (Linux only): run it with device: cuda"
            )
        # an optimizer's first use imports torch._dynamo: do it once here, not in every child
        OPTIMIZERS[params["optimizer"]]([torch.zeros(1, requires_grad=True)], LR)
    limit, source = _limit(params, device)
    usable = limit * (1 - params["headroom"])
    trials = {}  # batch size: {batch_size, fits, peak_gb, seconds}, in the order tried

    def fits(size):
        began = time.monotonic()
        if device.type == "cuda":
            peak = _step_peak(params, device, size)
            gc.collect()  # what the trial left, then the cached blocks
            torch.cuda.empty_cache()
        else:
            peak = _in_child(lambda: _step_peak(params, device, size))
        trials[size] = {
            "batch_size": size,
            "fits": peak is not None and peak <= usable,
            "peak_gb": None if peak is None else gb(peak),
            "seconds": round(time.monotonic() - began, 2),
        }
        return trials[size]["fits"]

    def affordable(size):
        """Time for this trial before max_seconds, judged by the last one scaled by size, with
        a margin: a bigger batch's allocations and page faults grow faster than its size."""
        last = list(trials.values())[-1]
        guess = MARGIN * last["seconds"] * max(1.0, size / last["batch_size"])
        return time.monotonic() + guess <= end

    configured = params["batch_size"]
    grid = Grid(params["multiple_of"], params["max_batch_size"])
    low, high, complete = _search(fits, configured, grid, affordable)
    configured_fits = trials[configured]["fits"]
    largest = max(grid.down(low), configured) if configured_fits else grid.down(low)
    problem = None
    if not configured_fits:
        problem = _problem(configured, trials[configured], usable, limit, source, largest, complete)
    return {
        "model": model_name(params),
        "configured_batch_size": configured,
        "configured_fits": configured_fits,
        "memory_gb_at_configured": trials[configured]["peak_gb"] if configured_fits else None,
        "max_batch_size": largest,
        "search_complete": complete,
        "upper_bound": high,
        "memory_limit_gb": gb(limit),
        "limit_source": source,
        "trials": list(trials.values()),
        "device": str(device),
        "problem": problem,
    }
