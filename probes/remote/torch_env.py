# torch.env: versions, the CUDA devices, and bf16/fp16 checked by really running them.
from _prelude import gb
from _torch import DTYPES, autocast, describe, need_torch, quiet, resolve_device, sync


def _cudnn(number):
    """cuDNN's version number as text: 8902 is 8.9.2, 90100 is 9.1.0."""
    major, rest = divmod(number, 10000 if number >= 90000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _nccl():
    torch = need_torch()
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # built without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _gpu(index):
    torch = need_torch()
    props = torch.cuda.get_device_properties(index)
    free, total = torch.cuda.mem_get_info(index)
    return {
        "index": index,
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "total_gb": gb(total),
        "free_gb": gb(free),
    }


def dtype_error(device, dtype):
    """None when a matmul and its backward ran under autocast in `dtype` with finite results
    (is_bf16_supported() alone can claim support that fails); else why not."""
    torch = need_torch()
    wanted = getattr(torch, DTYPES[dtype])
    try:
        x = torch.randn(32, 32, device=device, requires_grad=True)
        w = torch.randn(32, 32, device=device, requires_grad=True)
        with autocast(device, dtype):
            y = x @ w
        if y.dtype != wanted:
            return f"autocast on {device.type} computed the matmul in {y.dtype}, not {wanted}"
        y.float().square().mean().backward()
        sync(device)
        if not all(bool(torch.isfinite(t).all()) for t in (y, x.grad, w.grad)):
            return "the matmul or its gradients came out NaN/Inf"
    except Exception as exc:
        return describe(exc)
    return None


@quiet
def observe(params):
    torch = need_torch()
    device = resolve_device(params["device"])
    cuda = torch.cuda.is_available()
    gpus = [_gpu(i) for i in range(torch.cuda.device_count())] if cuda else []
    chosen = gpus[device.index] if device.type == "cuda" else {}
    errors = {dtype: dtype_error(device, dtype) for dtype in ("bf16", "fp16")}
    cudnn = torch.backends.cudnn.version() if cuda else None
    return {
        "torch": torch.__version__,
        "cuda": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn": _cudnn(cudnn) if cudnn else None,
        "nccl": _nccl() if cuda else None,
        "device": str(device),
        "device_count": len(gpus),
        "gpus": gpus,
        "gpu_name": chosen.get("name"),
        "capability": chosen.get("capability"),
        "gpu_memory_gb": chosen.get("total_gb"),
        "gpu_free_gb": chosen.get("free_gb"),
        "bf16": errors["bf16"] is None,
        "fp16": errors["fp16"] is None,
        "bf16_claimed": torch.cuda.is_bf16_supported() if device.type == "cuda" else None,
        "dtype_errors": {dtype: error for dtype, error in errors.items() if error},
    }
