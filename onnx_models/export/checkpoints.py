"""Reading a PyTorch checkpoint into a module written here, strictly.

The plain-torch architectures (torchvision CNNs, OpenCLIP's ViT CLIP) are only right if the checkpoint fills
every tensor with the shape the architecture expects and holds nothing else; a loose load would export random
weights without a word. So the mismatch is listed by name before anything is exported.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from embedstream.schemas.errors import UsageError


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors: ``torch.save`` files (weights only) or safetensors, a ``state_dict`` wrapper and
    DataParallel's ``module.`` prefix removed."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's own message advises weights_only=False: never here
        raise UsageError(
            f"{path}: holds pickled Python objects besides tensors, and embedstream loads weights only (it never "
            "runs a checkpoint's code): save the model's state_dict() with torch.save, or use safetensors"
        ) from exc
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_strictly(module: Any, state: dict[str, Any], refusal: str) -> Any:
    """``module`` in eval mode with ``state`` loaded; if a tensor is missing, extra or misshapen, a
    ``UsageError`` starting with ``refusal`` names them."""
    wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in wanted]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    wrong = [f"{k} {shape} ≠ {wanted[k]}" for k, shape in shapes.items() if wanted.get(k, shape) != shape]
    if missing or unexpected or wrong:
        raise UsageError(f"{refusal}: missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}")
    module.load_state_dict(state, strict=True)
    return module.eval()
