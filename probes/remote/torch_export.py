# torch.export (the kind): the model through each deployment format it will ship in, saved,
# loaded back and run, its answers compared with the eager model's at two batch sizes.
import inspect
import os
import re
import shutil
import tempfile
import time

from _torch import (
    Deadline,
    call_args,
    describe,
    load_workload,
    model_name,
    need_torch,
    quiet,
    resolve_device,
    yours,
)

PACKAGES = {"onnx": "onnx onnxscript onnxruntime"}
ANSI = r"\x1b\[[0-9;]*m"


class Failed(Exception):
    """A format's step that failed, in words: which step, and what it raised."""


def _step(what, call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except Failed:
        raise
    except Exception as exc:  # torch.onnx colours its messages: not in a report
        raise Failed(f"{what} failed: {re.sub(ANSI, '', describe(exc))}") from None


def _leaves(output):
    """The tensors of a model's output, flattened in order (tuples, dicts, HF outputs)."""
    torch = need_torch()
    from torch.utils import _pytree

    if hasattr(output, "to_tuple"):  # transformers' ModelOutput
        output = output.to_tuple()
    return [leaf for leaf in _pytree.tree_leaves(output) if torch.is_tensor(leaf)]


def _dynamic(model, args, kwargs):
    """The batch dimension of every tensor input marked dynamic, for torch.export: by the
    name of the forward() parameter each input binds to."""
    torch = need_torch()
    from torch.utils import _pytree

    def mark(leaf):
        return {0: torch.export.Dim.AUTO} if torch.is_tensor(leaf) and leaf.dim() else None

    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {name: _pytree.tree_map(mark, value) for name, value in bound.items()}


def _exported(model, args, kwargs):
    torch = need_torch()
    return _step(
        "torch.export.export",
        torch.export.export,
        model,
        args,
        kwargs,
        dynamic_shapes=_dynamic(model, args, kwargs),
    )


def export_format(model, args, kwargs, folder):
    """torch.export: the program saved as a .pt2 archive and loaded back."""
    torch = need_torch()
    path = os.path.join(folder, "model.pt2")
    _step("torch.export.save", torch.export.save, _exported(model, args, kwargs), path)
    module = _step("torch.export.load", torch.export.load, path).module()
    return lambda a, k: module(*a, **k), path, "torch.export.load"


OP = re.compile(r"\b(aten\.[\w.]+|op='([\w.]+)')")
FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _source_of(model, args, kwargs, error):
    """' (at model.py:13)': where the user's forward() calls the op an exporter could not
    convert, from torch.export's record of each graph node's source; '' when the error names
    no op, it already names the place, or the model does not export."""
    found = OP.search(error)
    if not found or "(at " in error:
        return ""
    try:
        program = need_torch().export.export(
            model, args, kwargs, dynamic_shapes=_dynamic(model, args, kwargs)
        )
    except Exception:
        return ""
    # the name the error gives may be a decomposition's (aten._linalg_eigh for linalg_eigh)
    op = (found[2] or found[1]).split(".")[1].lstrip("_")
    for node in program.graph.nodes:
        if op in str(node.target):
            places = FRAME.findall(node.meta.get("stack_trace") or "")
            mine = [(f, line) for f, line in places if yours(f)]
            if mine:
                return f" (at {os.path.basename(mine[-1][0])}:{mine[-1][1]})"
    return ""


def onnx_format(model, args, kwargs, folder):
    """ONNX through torch.onnx's exporter, checked by onnx.checker and run by onnxruntime; an
    op it cannot convert is traced back to the user's line."""
    torch = need_torch()
    path = os.path.join(folder, "model.onnx")
    try:
        _step(
            "torch.onnx.export",
            torch.onnx.export,
            model,
            args,
            path,
            kwargs=kwargs,
            dynamic_shapes=_dynamic(model, args, kwargs),
            dynamo=True,
            verbose=False,
        )
    except Failed as exc:
        raise Failed(f"{exc}{_source_of(model, args, kwargs, str(exc))}") from None
    import onnx
    import onnxruntime

    _step("onnx.checker", onnx.checker.check_model, path, full_check=True)
    session = _step(
        "onnxruntime",
        onnxruntime.InferenceSession,
        path,
        providers=["CPUExecutionProvider"],
    )
    names = [given.name for given in session.get_inputs()]

    def run(a, k):
        from torch.utils import _pytree

        feeds = [leaf.detach().cpu().numpy() for leaf in _pytree.tree_leaves((a, k))]
        outputs = session.run(None, dict(zip(names, feeds)))
        return [torch.from_numpy(output) for output in outputs]

    return run, path, f"onnxruntime {onnxruntime.__version__} (CPU)"


def torchscript_format(model, args, kwargs, folder):
    """TorchScript by tracing, saved and loaded back."""
    torch = need_torch()
    if kwargs:
        raise Failed("torch.jit.trace takes positional inputs only: give `inputs` in build()")
    path = os.path.join(folder, "model.ts")
    traced = _step("torch.jit.trace", torch.jit.trace, model, args, check_trace=False)
    _step("torch.jit.save", torch.jit.save, traced, path)
    loaded = _step("torch.jit.load", torch.jit.load, path)
    return lambda a, k: loaded(*a), path, "torch.jit.load"


def aoti_format(model, args, kwargs, folder):
    """AOTInductor: compiled ahead of time into a package a C++ or Python server loads."""
    need_torch()
    from torch import _inductor

    path = os.path.join(folder, "model.pt2")
    # its compile cache goes with the folder instead of staying in /tmp/torchinductor_<user>
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(folder, "inductor")
    program = _exported(model, args, kwargs)
    _step(
        "torch._inductor.aoti_compile_and_package",
        _inductor.aoti_compile_and_package,
        program,
        package_path=path,
    )
    loaded = _step("torch._inductor.aoti_load_package", _inductor.aoti_load_package, path)
    return lambda a, k: loaded(*a, **k), path, "torch._inductor.aoti_load_package"


FORMATS = {
    "export": export_format,
    "onnx": onnx_format,
    "torchscript": torchscript_format,
    "aoti": aoti_format,
}


def _difference(got, want):
    got, want = _leaves(got), _leaves(want)
    if len(got) != len(want):
        raise Failed(f"it answered {len(got)} tensors where the model answers {len(want)}")
    worst = 0.0
    for mine, theirs in zip(got, want):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise Failed(
                f"it answered shape {list(mine.shape)} where the model answers {list(theirs.shape)}"
            )
        diff = (mine.detach().cpu().double() - theirs.detach().cpu().double()).abs().max()
        worst = max(worst, float(diff))
    return worst


def _one(name, model, calls, folder, tolerance):
    """{ok, error, seconds, size_mb, max_abs_diff, runtime} of one format."""
    torch = need_torch()
    began = time.perf_counter()
    facts = {
        "ok": False,
        **dict.fromkeys(("error", "seconds", "size_mb", "max_abs_diff", "runtime")),
    }
    try:
        missing = _missing(name)
        if missing:
            raise Failed(f"{missing} is not installed on the target: pip install {PACKAGES[name]}")
        with torch.no_grad():
            run, path, facts["runtime"] = FORMATS[name](model, *calls[0][:2], folder)
            facts["size_mb"] = round(_size(path) / 1024**2, 3)
            diffs = []
            for index, (args, kwargs, size, expected) in enumerate(calls):
                what = f"running it at batch {size}"
                if index:
                    what += f" (exported at batch {calls[0][2]}: is the batch size fixed?)"
                diffs.append(_difference(_step(what, run, args, kwargs), expected))
        facts["max_abs_diff"] = max(diffs)
        if facts["max_abs_diff"] > tolerance:
            raise Failed(
                f"it answers differently from the eager model: max abs diff "
                f"{facts['max_abs_diff']:.3g} over tolerance {tolerance:g}"
            )
        facts["ok"] = True
    except Failed as exc:
        facts["error"] = str(exc)
    facts["seconds"] = round(time.perf_counter() - began, 3)
    return facts


def _missing(name):
    """The first package a format needs that does not import; None when all do."""
    for package in PACKAGES.get(name, "").split():
        try:
            __import__(package)
        except ImportError:
            return package
    return None


def _size(path):
    """Bytes of the artifact at `path`: a folder's files, or the file and the files saved
    beside it under its name (ONNX keeps its weights in model.onnx.data)."""
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, file))
            for root, _, files in os.walk(path)
            for file in files
        )
    folder, name = os.path.split(path)
    return sum(
        os.path.getsize(os.path.join(folder, file))
        for file in os.listdir(folder)
        if file.startswith(name)
    )


@quiet
def observe(params):
    torch = need_torch()
    device = resolve_device(params["device"])
    deadline = Deadline(params["max_seconds"])
    sizes = [params["batch_size"]] + (
        [params["check_batch_size"]] * bool(params["check_batch_size"])
    )
    model, calls = load_workload(params, sizes[0], device).model.eval(), []
    for size in sizes:  # the eager model's answer to a batch of each size
        work = load_workload(params, size, device)
        work.model = model
        batch = work.batch()
        with torch.no_grad():
            expected = work.infer(batch)
        calls.append((*call_args(work.inputs(batch)), size, expected))
    folder = tempfile.mkdtemp(prefix="matrix-export-")
    formats = {}
    try:
        for name in params["formats"]:
            deadline.check(f"{', '.join(formats) or 'no format'} done")
            formats[name] = _one(name, model, calls, folder, params["tolerance"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    failed = [name for name, facts in formats.items() if not facts["ok"]]  # formats: ≥ 1
    return {
        "formats": formats,
        "ok": not failed,
        "failed": failed,
        "batch_sizes": sizes,
        "problem": "; ".join(f"{name}: {formats[name]['error']}" for name in failed) or None,
        "device": str(device),
        "model": model_name(params),
    }
