"""Checkpoint files: fp16 safetensors + a JSON manifest for what we ship; safe loading of upstream files.

``save_checkpoint`` writes ``<name>.safetensors`` and ``<name>.json`` (the manifest, with the
weights' sha256). ``load_state_dict`` reads safetensors, or ``.pt``/``.ckpt``/``.pth`` files through
``torch.load(weights_only=True)`` (never unpickling arbitrary objects).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str | Path, manifest: Mapping[str, Any],
                    dtype: torch.dtype = torch.float16) -> Path:
    """Write floating tensors as ``dtype`` (fp16 by default) to ``path`` (.safetensors) and its manifest.

    Integer buffers (e.g. CDF tables) keep their dtype. The manifest gains ``file``, ``sha256``,
    ``bytes`` and ``dtype``. Returns the weights path.
    """
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    save_file(tensors, str(path))
    info = dict(manifest)
    info.update(file=path.name, sha256=file_sha256(path), bytes=path.stat().st_size, dtype=str(dtype).replace("torch.", ""))
    manifest_path(path).write_text(json.dumps(info, indent=2, sort_keys=False) + "\n")
    return path


#: buffers whose values the architecture fixes (CompressAI's ``LowerBound.bound`` and the GDN
#: parametrizer's ``pedestal``). fp16 checkpoints flush the 1e-9 likelihood bound and the 2^-36 pedestal
#: to 0, and a likelihood bound of 0 turns one far-off symbol into -log2(0) = inf bits (NaN gradients).
ARCHITECTURE_CONSTANTS: tuple[str, ...] = (".bound", ".pedestal")


def with_architecture_constants(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with the module's own values for its architecture constants (see above)."""
    own = module.state_dict()
    return {k: (own[k] if k.endswith(ARCHITECTURE_CONSTANTS) and k in own else v) for k, v in state_dict.items()}


def read_manifest(weights: str | Path) -> dict[str, Any]:
    return json.loads(manifest_path(weights).read_text())


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """Upstream files nest the weights (Lightning ``state_dict``, ``model``, ...); find the tensor dict."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model", "ema", "params"):
            if key in obj:
                return _unwrap(obj[key])
    raise CheckpointRefused("no state dict (a mapping of names to tensors) found in the checkpoint")


class CheckpointRefused(ValueError):
    """A weights file that is not a plain mapping of tensors (or not readable as one); nothing of it is used."""


def load_state_dict(path: str | Path, dtype: torch.dtype | None = torch.float32,
                    expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load weights from .safetensors or a ``torch.load(weights_only=True)`` file, on CPU.

    Floating tensors are cast to ``dtype`` (None keeps them). With ``expected_sha256`` a mismatch raises.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise ValueError(f"checkpoint {path} has sha256 {actual}, expected {expected_sha256}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    except CheckpointRefused:
        raise
    except Exception as exc:  # a pickle with code in it, a torn or foreign file: never half-loaded
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        # torch's weights-only refusal leads with advice; the line naming the blocked global says what it was
        first = next((ln for ln in lines if "GLOBAL" in ln), lines[0])
        raise CheckpointRefused(f"checkpoint {path} refused: not a plain tensor file ({first})") from exc
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    return state


__all__ = ["CheckpointRefused", "file_sha256", "load_state_dict", "manifest_path", "read_manifest", "save_checkpoint"]
