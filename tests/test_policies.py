"""Policies the evaluation runner loads: built-ins, and files exported as Isaac Lab's scripts
export them (TorchScript ``policy(obs)``, ONNX with input ``obs`` and output ``actions``)."""

from __future__ import annotations

import warnings

import pytest
import torch

from arena_recording.errors import ConfigError
from arena_recording.integrations.isaaclab_policies import load_policy

OBS = torch.arange(12, dtype=torch.float32).reshape(4, 3)


def actor() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ELU(), torch.nn.Linear(8, 2))


def test_zero_and_seeded_random_policies():
    assert torch.equal(
        load_policy("zero", num_actions=2, device="cpu", seed=0)(OBS), torch.zeros(4, 2)
    )
    first = load_policy("random", num_actions=2, device="cpu", seed=3)
    again = load_policy("random", num_actions=2, device="cpu", seed=3)
    other = load_policy("random", num_actions=2, device="cpu", seed=4)
    a = first(OBS)
    assert a.shape == (4, 2) and bool(((a >= -1) & (a <= 1)).all())
    assert torch.equal(a, again(OBS)) and not torch.equal(a, other(OBS))


def test_torchscript_and_onnx_files_act_like_the_module(tmp_path):
    module = actor()
    expected = module(OBS).detach()
    scripted = tmp_path / "policy.pt"
    torch.jit.script(module).save(str(scripted))
    got = load_policy(str(scripted), num_actions=2, device="cpu", seed=0)(OBS)
    assert torch.allclose(got, expected)
    exported = tmp_path / "policy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (OBS,),
            str(exported),
            input_names=["obs"],
            output_names=["actions"],
            dynamic_axes={"obs": {0: "batch"}},
            dynamo=False,
        )
    got = load_policy(str(exported), num_actions=2, device="cpu", seed=0)(OBS)
    assert torch.allclose(got, expected, atol=1e-5)


def test_bad_policies_are_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="policy: 'zeros' is neither one of"):
        load_policy("zeros", num_actions=2, device="cpu", seed=0)
    junk = tmp_path / "policy.pt"
    junk.write_text("not a model")
    with pytest.raises(ConfigError, match="policy: .* is not a TorchScript policy"):
        load_policy(str(junk), num_actions=2, device="cpu", seed=0)
