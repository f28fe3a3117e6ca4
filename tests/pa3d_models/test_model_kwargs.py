"""Issue 18: create_model / register_model / freeze_for_stage2 refuse bad arguments by name, before building."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pa3d_models import MODELS, check_model_kwargs, create_model, freeze_for_stage2, list_models, register_model


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text_dim": 0}, "text_dim must be an int >= 1, got 0"),
        ({"teacher_dim": -3}, "teacher_dim must be an int >= 1, got -3"),
        ({"num_groups": 2.0}, "num_groups must be an int >= 1, got 2.0"),
        ({"depth": True}, "depth must be an int >= 1, got True"),
        ({"embed_dim": 66}, "embed_dim must be divisible by num_heads, got embed_dim=66, num_heads=4"),
        ({"mlp_ratio": 0}, "mlp_ratio must be > 0, got 0"),
        ({"mlp_ratio": float("inf")}, "mlp_ratio must be a finite number, got inf"),
        ({"drop_path_rate": 1.5}, "drop_path_rate must be in [0, 1), got 1.5"),
        ({"logit_scale_init": -1.0}, "logit_scale_init must be > 0, got -1.0"),
        ({"logit_bias_init": "x"}, "logit_bias_init must be a finite number, got 'x'"),
        ({"logit_mode": "clip"}, "logit_mode must be one of ('paper', 'official'), got 'clip'"),
        ({"backend": "cuda"}, "backend must be one of ('auto', 'torch', 'cluster'), got 'cuda'"),
        ({"qkv_bias": 1}, "qkv_bias must be a bool, got 1"),
        ({"txt_dim": 32}, "unknown model argument(s) ['txt_dim']; accepted: ["),
    ],
)
def test_create_model_names_the_bad_argument(kwargs, message):
    config = {"embed_dim": 64, "num_heads": 4} if "embed_dim" in kwargs else {}
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model("patchalign3d_tiny", **{**config, **kwargs})


@pytest.mark.parametrize("name", [None, ["patchalign3d_tiny"], "nope"])
def test_unknown_model_name(name):
    with pytest.raises(ValueError, match=r"unknown model .*; registered: \["):
        create_model(name)


def test_bad_registration_fails_where_it_is_made():
    with pytest.raises(ValueError, match="text_dim must be an int >= 1, got 0"):
        register_model("broken_for_test", text_dim=0)
    assert "broken_for_test" not in MODELS
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        register_model("", text_dim=8)


@given(text_dim=st.integers(1, 48), teacher_dim=st.integers(1, 48), heads=st.sampled_from([1, 2, 4]))
def test_valid_kwargs_pass_through_unchanged(text_dim, teacher_dim, heads):
    config = {"text_dim": text_dim, "teacher_dim": teacher_dim, "embed_dim": 16, "num_heads": heads}
    assert check_model_kwargs(dict(config)) == config


def test_every_registered_config_is_valid():
    for name in list_models():
        check_model_kwargs(dict(MODELS[name]))


def test_freeze_for_stage2_arguments():
    model = create_model("patchalign3d_tiny", depth=1)
    with pytest.raises(ValueError, match="model must be a PatchAlign3D, got Linear"):
        import torch

        freeze_for_stage2(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"policy must be one of \['official', 'paper'\], got 'all'"):
        freeze_for_stage2(model, "all")
    with pytest.raises(ValueError, match="freeze_bn_stats must be a bool, got 'no'"):
        freeze_for_stage2(model, freeze_bn_stats="no")
