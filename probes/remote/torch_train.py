# torch.train and torch.lr (params["op"]): real optimizer steps on the target's device.
import math
import statistics
import time

from _prelude import gb
from _torch import (
    Deadline,
    Trainer,
    load_workload,
    model_name,
    need_torch,
    peak_bytes,
    peak_start,
    quiet,
    resolve_device,
    sync,
    went_nonfinite,
)


def run(params, device, lr, deadline):
    """Train a fresh, seeded workload for params["steps"] steps at `lr`; stop at the first
    NaN/Inf. Returns what happened at each step."""
    baseline = peak_start(device)  # the model and optimizer count too
    work = load_workload(params, params["batch_size"], device)
    trainer = Trainer(work, params, device, lr)
    fixed = work.batch() if params["batch"] == "fixed" else None  # None: fresh each step
    total, losses, seconds, bad = params["steps"], [], [], None
    for step in range(1, total + 1):
        deadline.check(f"{step - 1} of {total} steps at lr={lr:g} done")
        began = time.perf_counter()
        loss, bad = trainer.step(fixed)
        sync(device)
        seconds.append(time.perf_counter() - began)
        losses.append(loss if math.isfinite(loss) else None)
        if bad is not None:
            break
    return {
        "losses": losses,
        "bad": bad,
        "seconds": seconds,
        "peak": peak_bytes(device, baseline),
        "skipped_steps": trainer.skipped,
        "params": sum(p.numel() for p in work.model.parameters()),
    }


def _nonfinite(record):
    bad = record["bad"]
    return None if bad is None else went_nonfinite(bad, len(record["losses"]))


def observe_train(params, device, deadline):
    record = run(params, device, params["lr"], deadline)
    losses, steps = record["losses"], len(record["losses"])
    half = steps // 2
    finite = record["bad"] is None
    decreased = finite and statistics.mean(losses[half:]) < statistics.mean(losses[:half])
    step_seconds = statistics.median(record["seconds"])
    problem = _nonfinite(record)
    if problem is None and record["skipped_steps"] == steps:
        problem = f"GradScaler skipped all {steps} steps: fp16 gradients overflow; try bf16"
    elif problem is None and not decreased:
        early, late = statistics.mean(losses[:half]), statistics.mean(losses[half:])
        batch = "one fixed batch" if params["batch"] == "fixed" else "a fresh batch each step"
        problem = (  # the words of the test itself: the later half's mean against the earlier
            f"the loss did not decrease over {steps} steps at lr={params['lr']:g} on {batch}: "
            f"the mean of the last {steps - half} steps ({late:.4g}) is not below that of the "
            f"first {half} ({early:.4g})"
        )
    return {
        "losses": losses,
        "finite": finite,
        "first_nonfinite": record["bad"],
        "nonfinite_step": None if finite else steps,
        "loss_decreased": decreased,
        "step_seconds": round(step_seconds, 6),
        "samples_per_s": round(params["batch_size"] / step_seconds, 2),
        "peak_memory_gb": None if record["peak"] is None else gb(record["peak"]),
        "skipped_steps": record["skipped_steps"],
        "device": str(device),
        "dtype": params["dtype"],
        "params": record["params"],
        "problem": problem,
    }


def _trial(params, device, lr, deadline):
    """One run at `lr`: {lr, losses, loss_ratio, diverged} and why it diverged (or None)."""
    record = run(params, device, lr, deadline)
    losses, factor = record["losses"], params["diverge_factor"]
    ratio = None if record["bad"] else round(losses[-1] / max(losses[0], 1e-12), 4)
    why = _nonfinite(record)
    if why is None and ratio > factor:
        why = f"ratio {ratio:.1f}, over diverge_factor {factor:g}"
    return {"lr": lr, "losses": losses, "loss_ratio": ratio, "diverged": why is not None}, why


def observe_lr(params, device, deadline):
    trial, why = _trial(params, device, params["lr"], deadline)
    facts = dict(trial, range=None, best_lr=None)
    facts["problem"] = f"Loss diverged at lr={params['lr']:g} ({why})" if why else None
    if params.get("range"):
        low, high, points = params["range"][0], params["range"][1], params["points"]
        rates = [low * (high / low) ** (i / (points - 1)) for i in range(points)]
        tried = [_trial(params, device, float(f"{lr:.3g}"), deadline)[0] for lr in rates]
        facts["range"] = [{k: t[k] for k in ("lr", "loss_ratio", "diverged")} for t in tried]
        stable = [t for t in tried if not t["diverged"]]
        best = min(stable, key=lambda t: t["loss_ratio"], default=None)
        facts["best_lr"] = best and best["lr"]
    return facts


@quiet
def observe(params):
    need_torch()
    device = resolve_device(params["device"])
    deadline = Deadline(params["max_seconds"])
    handler = observe_train if params["op"] == "torch.train" else observe_lr
    return {**handler(params, device, deadline), "model": model_name(params)}
