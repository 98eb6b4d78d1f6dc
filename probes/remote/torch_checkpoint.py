# torch.checkpoint: train, save to the training volume, reload into fresh objects, continue, and
# compare with the run that was never interrupted.
import os
import shutil
import tempfile
import time

from _prelude import ObserveError
from _torch import (
    Deadline,
    Trainer,
    describe,
    load_workload,
    model_name,
    need_torch,
    quiet,
    resolve_device,
    rng_state,
    set_rng_state,
    went_nonfinite,
)

# cuBLAS reads this when CUDA starts: without it deterministic matmuls are not available
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _steps(trainer, count, deadline, stage):
    for step in range(count):
        deadline.check(f"{stage}: {step} of {count} steps done")
        _, bad = trainer.step()
        if bad is not None:
            why = went_nonfinite(bad, step + 1)
            raise ObserveError(f"{stage}: {why}; check it with torch.train or lower lr")


def _save(state, path):
    """torch.save, flushed to the device: seconds taken."""
    torch = need_torch()
    began = time.perf_counter()
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - began


def _load(path, device):
    """torch.load after dropping the file from the page cache (Linux): (state, seconds)."""
    torch = need_torch()
    with open(path, "rb") as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        began = time.perf_counter()
        state = torch.load(handle, map_location=device, weights_only=True)
    return state, time.perf_counter() - began


def _cannot_write(where, exc):
    why = (exc.strerror or str(exc)).lower()
    return ObserveError(f"cannot write checkpoint to {where}: {why}")


def _workdir(where):
    try:
        return tempfile.mkdtemp(prefix="matrix-checkpoint-", dir=where)
    except OSError as exc:
        raise _cannot_write(where, exc) from None


def _max_diff(model, reference):
    """Largest difference between `model`'s weights and `reference`'s (a model, or a
    state_dict as saved)."""
    saved = reference if isinstance(reference, dict) else reference.state_dict()
    return max(
        float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0
        for a, b in zip(model.state_dict().values(), saved.values())
    )


def _resume(params, device, path, deadline):
    """Fresh workload and optimizer, state from the checkpoint, then resume_steps more."""
    trainer = Trainer(
        load_workload(params, params["batch_size"], device), params, device, params["lr"]
    )
    state, seconds = _load(path, device)
    trainer.load_state_dict(state)
    if params["restore_rng"]:
        set_rng_state(state["rng"])
    _steps(trainer, params["resume_steps"], deadline, "resumed run")
    return trainer, seconds


def _resized(params, device, path, deadline):
    """Resume at another batch size, as a job restarted on more or fewer GPUs does: the
    checkpoint must load into objects built for it, with the saved weights, and train on."""
    size = params["resume_batch_size"]
    trainer = Trainer(load_workload(params, size, device), params, device, params["lr"])
    facts = {"batch_size": size, "loaded": False, "max_abs_diff": None, "finite": None}
    state, _ = _load(path, device)
    try:
        trainer.load_state_dict(state)
    except Exception as exc:  # load_state_dict lists each mismatch on a line of its own
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        facts["problem"] = (
            f"the checkpoint does not load into the model built for batch {size}: "
            f"{'; '.join(lines[1:4]) or describe(exc)} — keep state that depends on the batch "
            "size out of the state_dict (non-persistent buffers)"
        )
        return facts
    facts.update(loaded=True, max_abs_diff=_max_diff(trainer.work.model, state["model"]))
    if facts["max_abs_diff"]:
        facts["problem"] = (
            f"resumed at batch {size}, the weights differ from the checkpoint's by up to "
            f"{facts['max_abs_diff']:.3g}: load_state_dict did not restore them all"
        )
        return facts
    try:
        _steps(trainer, params["resume_steps"], deadline, f"run resumed at batch {size}")
        facts["finite"] = True
    except ObserveError as exc:
        facts.update(finite=False, problem=str(exc))
    return facts


def _round_trip(params, workdir):
    """(uninterrupted trainer, resumed trainer, checkpoint bytes, write and read seconds,
    the resume at another batch size or None)."""
    torch = need_torch()
    device = resolve_device(params["device"])
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    deadline = Deadline(params["max_seconds"])
    path = os.path.join(workdir, "checkpoint.pt")
    work = load_workload(params, params["batch_size"], device)
    run = Trainer(work, params, device, params["lr"])
    _steps(run, params["steps"], deadline, "first run")
    state = dict(run.state_dict(), rng=rng_state(device), step=params["steps"])
    try:
        write_seconds = _save(state, path)
    except OSError as exc:
        raise _cannot_write(params["dir"], exc) from None
    _steps(run, params["resume_steps"], deadline, "uninterrupted run")
    resumed, read_seconds = _resume(params, device, path, deadline)
    resized = None
    if params["resume_batch_size"]:  # last: building models reseeds the RNGs the runs use
        resized = _resized(params, device, path, deadline)
    return run, resumed, os.path.getsize(path), write_seconds, read_seconds, resized


@quiet
def observe(params):
    workdir = _workdir(params["dir"])  # first: an unwritable volume fails before torch loads
    try:
        run, resumed, size, write_seconds, read_seconds, resized = _round_trip(params, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    diff = _max_diff(resumed.work.model, run.work.model)
    tolerance = params["tolerance"]
    exact = diff <= tolerance
    problem = None
    if not exact:
        rng = "" if params["restore_rng"] else "; RNG state was not restored (restore_rng: false)"
        problem = (
            f"the resumed run differs from the uninterrupted one by up to {diff:.3g} "
            f"(tolerance {tolerance:g}){rng}"
        )
    resized_ok = None
    if resized is not None:
        resized_ok = "problem" not in resized
        problem = "; ".join(filter(None, (problem, resized.pop("problem", None)))) or None
    mb = size / 2**20
    return {
        "model": model_name(params),
        "resumed_exactly": exact,
        "max_abs_diff": diff,
        "checkpoint_mb": round(mb, 3),
        "write_mb_s": round(mb / write_seconds, 1),
        "read_mb_s": round(mb / read_seconds, 1),
        "left_behind": os.path.exists(workdir),
        "rng_restored": params["restore_rng"],
        "resized": resized,
        "resized_ok": resized_ok,
        "problem": problem,
    }
