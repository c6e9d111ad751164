"""Checking a device name before anything is built on it, so that ``cuda`` on a machine without a GPU is reported
as a device problem (naming the option) and not as a failure of the backbone, the model or the first batch.

Example::

    from st_oblique.devices import check_device

    check_device("cuda:1", name="--device")   # ObliqueConfigError on a CPU-only machine:
    # "--device cuda:1: no CUDA GPU is available on this machine (devices here: cpu); ..."
"""

from __future__ import annotations

from st_oblique.errors import ObliqueConfigError

__all__ = ["available_devices", "check_device"]


def available_devices() -> list[str]:
    """The device names usable here: ``cpu``, ``cuda:0`` ... ``cuda:N-1``, ``mps``, ``xpu:0``..."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        devices += [f"xpu:{index}" for index in range(xpu.device_count())]
    return devices


def check_device(device: object, *, name: str = "device") -> None:
    """Raise :class:`~st_oblique.errors.ObliqueConfigError` unless ``device`` (a string or ``torch.device``; None
    is the default device and always fine) names a device this machine has.

    Args:
        device: e.g. ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``.
        name: how the message names the setting (``"--device"`` for the command line).
    """
    if device is None:
        return
    import torch

    here = available_devices()
    fix = f"devices here: {', '.join(here)}; pass one of them or leave {name} out for the default"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ObliqueConfigError(
            f"{name} {device}: not a device name ({fix}; names look like cpu, cuda, cuda:1, mps)."
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else f", and this PyTorch ({torch.__version__}) is built without CUDA"
            raise ObliqueConfigError(f"{name} {device}: no CUDA GPU is available on this machine{build} ({fix}).")
        if parsed.index is not None and parsed.index >= count:
            raise ObliqueConfigError(
                f"{name} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1} ({fix})."
            )
        return
    if parsed.type == "cpu":
        return
    if parsed.type == "mps" and "mps" not in here:
        raise ObliqueConfigError(f"{name} {device}: no Apple GPU (MPS) is available on this machine ({fix}).")
    try:
        torch.empty(1, device=parsed)
    except Exception as error:  # whatever the backend raises for a device it does not have
        reason = " ".join(str(error).split()).split(". ")[0].rstrip(".")[:200]
        raise ObliqueConfigError(f"{name} {device}: this machine cannot use it ({reason}; {fix}).") from None
