"""Teachers: the tiny random teacher, DINOv2 through timm from a local file (random weights), bad input."""

from __future__ import annotations

import pytest
import torch

from pa3d_models import (
    TEACHERS,
    DINOv2Teacher,
    MissingWeightsError,
    Teacher,
    TinyTeacher,
    build_teacher,
    default_weights_path,
)

timm = pytest.importorskip("timm")


def test_tiny_teacher_shapes_determinism_and_protocol():
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    a = TinyTeacher(16, patch_size=8, seed=3)
    torch.manual_seed(123)  # the global RNG does not matter
    b = TinyTeacher(16, patch_size=8, seed=3)
    out = a(images)
    assert out.shape == (3, 16, 5, 6) and out.dtype == torch.float32
    assert torch.equal(out, b(images))
    assert not torch.equal(out, TinyTeacher(16, patch_size=8, seed=4)(images))
    assert isinstance(a, Teacher) and a.name == "tiny" and a.feature_dim == 16
    assert "feature_dim=16" in repr(a)


def save_random_dinov2(arch: str, path) -> torch.nn.Module:
    """A timm DINOv2 with random weights (drawn directly: timm's own init is slow on CPU), saved to ``path``."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    state = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    save_file(state, str(path))
    return model.eval()


@pytest.mark.parametrize(("name", "prefix"), [("dinov2_vits14", 1), ("dinov2_vits14_reg", 5)])
def test_dinov2_teacher_loads_a_local_file_and_matches_timm(tmp_path, name, prefix):
    path = tmp_path / "weights.safetensors"
    reference = save_random_dinov2(TEACHERS[name], path)
    teacher = build_teacher(name, path, image_size=28, view_batch=2)
    assert isinstance(teacher, DINOv2Teacher) and isinstance(teacher, Teacher)
    assert teacher.name == TEACHERS[name] and teacher.feature_dim == 384 and teacher.weights_note is None
    images = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    out = teacher(images)
    assert out.shape == (3, 384, 2, 2)
    # Reference: DINOv2's preprocessing by hand, then timm's tokens without cls/registers.
    x = torch.nn.functional.interpolate(images, size=(28, 28), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    reference.set_input_size(img_size=28) if hasattr(reference, "set_input_size") else None
    with torch.no_grad():
        tokens = reference.forward_features((x - mean) / std)
    assert tokens.shape[1] == prefix + 4
    expected = tokens[:, prefix:].transpose(1, 2).reshape(3, 384, 2, 2)
    assert torch.allclose(out, expected, atol=1e-4)


def test_missing_weights_name_the_file_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PA3D_WEIGHTS", str(tmp_path))
    expected = tmp_path / "vit_base_patch14_dinov2.safetensors"
    assert default_weights_path("vit_base_patch14_dinov2") == expected
    with pytest.raises(MissingWeightsError) as err:
        build_teacher("dinov2_vitb14")
    message = str(err.value)
    assert str(expected) in message
    assert "timm/vit_base_patch14_dinov2.lvd142m" in message and "--weights FILE" in message
    with pytest.raises(MissingWeightsError, match="not found at .*nope.safetensors"):
        DINOv2Teacher("dinov2_vits14", weights=tmp_path / "nope.safetensors")


def test_teacher_bad_input(tmp_path):
    with pytest.raises(ValueError, match="image_size must be a positive multiple of 14"):
        DINOv2Teacher("dinov2_vits14", weights=tmp_path / "x.safetensors", image_size=224 + 1)
    with pytest.raises(ValueError, match="arch must be a timm DINOv2 model"):
        DINOv2Teacher("vit_small_patch16_224")
    with pytest.raises(ValueError, match="name must be 'auto', 'geometry', 'tiny', one of"):
        build_teacher("clip")
    with pytest.raises(ValueError, match=r"images must be \(V, 3, H, W\) float, got shape \(2, 1, 8, 8\)"):
        TinyTeacher(4)(torch.rand(2, 1, 8, 8))


def test_random_weights_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("PA3D_WEIGHTS", str(tmp_path))
    teacher = build_teacher("dinov2_vits14", random_weights_ok=True, image_size=28)
    assert teacher.weights_note is not None and "random weights" in teacher.weights_note
    assert teacher(torch.rand(1, 3, 28, 28)).shape == (1, 384, 2, 2)
    with pytest.raises(MissingWeightsError):
        build_teacher("dinov2_vits14", image_size=28)
