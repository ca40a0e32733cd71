"""Policies an evaluation can run: random, zero, or a file exported by Isaac Lab's own scripts.

Isaac Lab's RSL-RL ``play`` script exports a trained policy as TorchScript (``policy.pt``,
``policy(obs) -> actions``) and as ONNX (``policy.onnx``, input ``obs``, output ``actions``).
Both take the ``policy`` observation group as one tensor. Recurrent ONNX exports (hidden state
inputs) are refused with a message: their state would have to be reset per env.

Example::

    policy = load_policy("logs/rsl_rl/cartpole/exported/policy.pt", num_actions=1,
                         device="cpu", seed=0)
    actions = policy(obs["policy"])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from arena_recording.errors import ConfigError

Policy = Callable[[torch.Tensor], torch.Tensor]
BUILT_IN = ("zero", "random")


def check_policy(spec: str, key: str = "policy") -> Path:
    """The policy file ``spec`` names (a built-in gives its name); refused before any work
    starts when it is neither a built-in nor an existing file."""
    path = Path(spec)
    if spec not in BUILT_IN and not path.is_file():
        raise ConfigError(
            key, f"{spec!r} is neither one of {list(BUILT_IN)} nor an existing policy file"
        )
    return path


def load_policy(
    spec: str, *, num_actions: int, device: str, seed: int, key: str = "policy"
) -> Policy:
    """``zero``, ``random`` (uniform in [-1, 1], seeded) or the path of a ``.pt`` / ``.onnx`` file;
    errors name the config ``key``."""
    if spec == "zero":
        return lambda obs: torch.zeros(obs.shape[0], num_actions, device=device)
    if spec == "random":
        generator = torch.Generator(device=device).manual_seed(seed)

        def random(obs: torch.Tensor) -> torch.Tensor:
            shape = (obs.shape[0], num_actions)
            return torch.rand(shape, generator=generator, device=device) * 2 - 1

        return random
    path = check_policy(spec, key)
    if path.suffix == ".onnx":
        return _onnx_policy(path, device, key)
    try:
        module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as err:
        raise ConfigError(key, f"{spec} is not a TorchScript policy: {err}") from None
    module.eval()

    def scripted(obs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(obs)

    return scripted


def _onnx_policy(path: Path, device: str, key: str) -> Policy:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            key, "ONNX policies need onnxruntime (pip install 'arena-recording[onnx]')"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ConfigError(
            key,
            f"{path} takes inputs {names}; only feed-forward policies (one input) are supported",
        )
    name = inputs[0].name

    def onnx(obs: torch.Tensor) -> torch.Tensor:
        actions = session.run(None, {name: obs.detach().cpu().float().numpy()})[0]
        return torch.as_tensor(actions, device=device)

    return onnx
