# torch.batch_size: the largest batch whose training step fits in memory: double until it does
# not fit, then bisect. On CUDA trials run here and catch OutOfMemoryError; on CPU each runs in a
# forked child, whose peak RSS growth is held against memory_limit_gb.
import gc
import json
import os
import socket

from _prelude import GB, ObserveError, gb
from _torch import (
    OPTIMIZERS,
    Deadline,
    Trainer,
    describe,
    is_oom,
    load_workload,
    need_torch,
    peak_bytes,
    peak_start,
    quiet,
    ram_bytes,
    resolve_device,
    sync,
)

LR = 1e-3  # the learning rate does not change a step's memory


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


def _in_child(fn):
    """fn() in a forked child, so its peak memory is its own and nothing it allocated stays.
    It runs on one thread: memory is measured, not speed, and one thread is cheaper and
    repeatable. A child the kernel killed (its OOM killer) counts as out of memory."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        need_torch().set_num_threads(1)
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


def _search(fits, cap):
    """Largest size in 1..cap that fits, assuming a bigger batch never needs less memory."""
    low, high, size = 0, None, 1  # low fits (0: none yet); high does not
    while high is None and low < cap:
        if fits(size):
            low, size = size, min(size * 2, cap)
        else:
            high = size
    while high is not None and high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@quiet
def observe(params):
    torch = need_torch()
    device = resolve_device(params["device"])
    deadline = Deadline(params["max_seconds"])
    limit = params.get("memory_limit_gb")
    if device.type == "cpu":
        if peak_start(device) is None:
            raise ObserveError(
                f"on CPU the search measures peak RSS through /proc/self/clear_refs, which "
                f"{socket.gethostname()} lacks (Linux only): run it with device: cuda"
            )
        limit = limit or ram_bytes() / GB
        # an optimizer's first use imports torch._dynamo: do it once here, not in every child
        OPTIMIZERS[params["optimizer"]]([torch.zeros(1, requires_grad=True)], LR)
    trials = {}  # batch size: {batch_size, fits, peak_gb}, in the order tried

    def fits(size):
        if size not in trials:
            deadline.check(f"{len(trials)} trials done, batch sizes {sorted(trials)}")
            if device.type == "cuda":
                peak = _step_peak(params, device, size)
                gc.collect()  # what the trial left, then the cached blocks
                torch.cuda.empty_cache()
            else:
                peak = _in_child(lambda: _step_peak(params, device, size))
            ok = peak is not None and (limit is None or peak <= limit * GB)
            trials[size] = {
                "batch_size": size,
                "fits": ok,
                "peak_gb": None if peak is None else gb(peak),
            }
        return trials[size]["fits"]

    largest = _search(fits, params["max_batch_size"])
    configured = params["batch_size"]
    configured_fits = fits(configured)
    peak = trials[configured]["peak_gb"]
    problem = None
    if not configured_fits:
        over = "" if peak is None else f": it needs {peak:g}GB, over the {limit:g}GB limit"
        problem = f"Batch size {configured} causes OOM{over} (max that fits: {largest})"
    return {
        "max_batch_size": largest,
        "configured_batch_size": configured,
        "configured_fits": configured_fits,
        "memory_gb_at_configured": peak if configured_fits else None,
        "memory_limit_gb": None if limit is None else round(limit, 2),
        "trials": list(trials.values()),
        "device": str(device),
        "problem": problem,
    }
