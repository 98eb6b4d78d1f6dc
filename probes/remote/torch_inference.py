# torch.inference: forward-pass latency percentiles per batch size, and torch.export.export.
import time

from _prelude import percentile
from _torch import (
    Deadline,
    autocast,
    call_args,
    describe,
    load_workload,
    model_name,
    need_torch,
    quiet,
    resolve_device,
    sync,
)


def _latencies(work, params, device, deadline, size):
    """Sorted milliseconds of `runs` forward passes on one batch, after `warmup` untimed."""
    torch = need_torch()
    work.model.eval()
    batch, warmup, runs = work.batch(), params["warmup"], params["runs"]
    times = []
    with torch.inference_mode(), autocast(device, params["dtype"]):
        for run in range(warmup + runs):
            deadline.check(f"{len(times)} of {runs} timed runs at batch size {size} done")
            began = time.perf_counter()
            work.infer(batch)
            sync(device)
            if run >= warmup:
                times.append((time.perf_counter() - began) * 1000)
    return sorted(times)


def export_error(work):
    """None when torch.export.export traced the model and the exported program ran; else which
    step failed and why."""
    torch = need_torch()
    args, kwargs = call_args(work.inputs(work.batch()))
    try:
        program = torch.export.export(work.model.eval(), args, kwargs)
    except Exception as exc:
        return f"torch.export.export failed: {describe(exc)}"
    try:
        with torch.inference_mode():
            program.module()(*args, **kwargs)
    except Exception as exc:
        return f"the exported program failed to run: {describe(exc)}"
    return None


@quiet
def observe(params):
    need_torch()
    device = resolve_device(params["device"])
    deadline = Deadline(params["max_seconds"])
    latency, throughput, first = {}, {}, None
    for size in params["batch_sizes"]:
        work = load_workload(params, size, device)
        first = first or work
        times = _latencies(work, params, device, deadline, size)
        key = str(size)
        latency[key] = {p: round(percentile(times, int(p[1:])), 3) for p in ("p50", "p95", "p99")}
        latency[key]["mean"] = round(sum(times) / len(times), 3)
        throughput[key] = round(size * 1000 / latency[key]["p50"], 1)
    error = export_error(first) if params["export"] else None
    head = latency[str(params["batch_sizes"][0])]
    return {
        "model": model_name(params),
        "latency_ms": latency,
        "p50_ms": head["p50"],
        "p95_ms": head["p95"],
        "p99_ms": head["p99"],
        "samples_per_s": throughput,
        "export_ok": (error is None) if params["export"] else None,
        "export_error": error,
        "device": str(device),
    }
