"""init_from_checkpoint: every checkpoint kind initialises a model for fine-tuning, with provenance; every bad
input gives one clear message (issue 19, and issue 18's checkpoint items).

Official-layout files are built from a pa3d model's encoder (pa3d keeps the official keys, which
test_checkpoint.py holds against the documented key list) plus ``proj`` and ``temp``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from pa3d_models import (
    PatchAlign3D,
    create_model,
    init_from_checkpoint,
    load_checkpoint,
    load_official_checkpoint,
    load_pretrained,
    load_torch_file,
    read_metadata,
)

TINY = dict(backend="torch")


def tiny(seed: int = 0, **kw) -> PatchAlign3D:
    torch.manual_seed(seed)
    model = create_model("patchalign3d_tiny", **{**TINY, **kw})
    with torch.no_grad():  # make every buffer and the logit values differ from a fresh model's
        model.logit.log_scale.fill_(math.log(7.0) + seed)
        if getattr(model.logit, "bias", None) is not None:
            model.logit.bias.fill_(-3.0 - seed)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model


def official_from(model: PatchAlign3D, *, temp: bool = True, head: str = "text") -> dict:
    """An official-layout dict holding ``model``'s encoder and one of its heads as ``proj``."""
    sd = model.state_dict()
    ckpt = {
        "epoch": 9,
        "model": {k[len("encoder."):]: v.clone() for k, v in sd.items() if k.startswith("encoder.")},
        "proj": {"proj.weight": sd[f"{head}_head.weight"].clone(), "proj.bias": sd[f"{head}_head.bias"].clone()},
        "args": {"num_heads": model.encoder.config["num_heads"], "npoint": 2048},
    }
    if temp:
        ckpt["temp"] = {"log_scale": sd["logit.log_scale"].clone()}
    return ckpt


def training_state_from(model: PatchAlign3D) -> dict:
    """The recipe's last.pt layout (pa3d_train.engine.save_training_state), NumPy RNG state included."""
    return {
        "format": "pa3d-training-state/1",
        "model": model.state_dict(),
        "optimizer": None,
        "epoch": 3,
        "step": 12,
        "config": {"model": "patchalign3d_tiny", "seed": 0},
        "rng": {"python": (3, tuple(range(5)), None), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "extra": {"history": [{"loss": 0.5}]},
    }


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_taken(model: PatchAlign3D, source: PatchAlign3D, prefixes=("encoder.", "text_head.", "logit.")):
    got, want = model.state_dict(), source.state_dict()
    for k, v in want.items():
        if k.startswith(prefixes):
            assert torch.equal(got[k], v), k


# ----------------------------------------------------------------------------------------------- each kind


def write_kind(kind: str, source: PatchAlign3D, tmp_path):
    """Write ``source`` as checkpoint ``kind``; return (spec, weight file hashed)."""
    if kind == "pretrained":
        source.save_pretrained(tmp_path / "folder")
        return tmp_path / "folder", tmp_path / "folder" / "model.safetensors"
    if kind == "training_state":
        torch.save(training_state_from(source), tmp_path / "last.pt")
        return tmp_path / "last.pt", tmp_path / "last.pt"
    if kind == "official":
        torch.save(official_from(source), tmp_path / "official.pt")
        return tmp_path / "official.pt", tmp_path / "official.pt"
    if kind == "state_dict":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
        return tmp_path / "w.safetensors", tmp_path / "w.safetensors"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["pretrained", "training_state", "official", "state_dict"])
def test_every_kind_initialises_encoder_text_head_and_logit(kind, tmp_path):
    source = tiny(seed=1)
    spec, weights = write_kind(kind, source, tmp_path)
    model = tiny(seed=2)
    before_teacher = model.teacher_head.weight.clone()
    report = init_from_checkpoint(model, spec)
    assert report.origin.kind == kind
    assert report.origin.sha256 == sha(weights)
    assert report.origin.path == str(spec.resolve())
    assert model.init_origin == report.origin.to_dict()
    if kind == "official":  # the release has no logit bias: 0 keeps its logits scale * cos
        assert_taken(model, source, ("encoder.", "text_head.", "logit.log_scale"))
        assert float(model.logit.bias.detach()) == 0.0
        assert report.loaded == ("encoder", "text_head", "logit")
        assert torch.equal(model.teacher_head.weight, before_teacher)
        assert any("logit bias" in n for n in report.notes)
    else:
        assert_taken(model, source, ("encoder.", "text_head.", "logit.", "teacher_head."))
        assert report.loaded == ("encoder", "text_head", "logit", "teacher_head")
    assert report.reinitialised == ()


def test_official_init_reproduces_the_official_loader_and_its_logits(tmp_path):
    """Reference: a paper-mode model initialised from an official file gives the same patch features as
    load_official_checkpoint's official-mode model, and the same logits (bias 0, same scale)."""
    source = tiny(seed=3)
    torch.save(official_from(source), tmp_path / "official.pt")
    reference = load_official_checkpoint(tmp_path / "official.pt", num_groups=32, group_size=16, backend="torch")
    model = tiny(seed=4)
    init_from_checkpoint(model, tmp_path / "official.pt")
    points = torch.rand(2, 256, 3)
    a, b = model.eval()(points), reference(points)
    torch.testing.assert_close(a["patch_feats"], b["patch_feats"])
    torch.testing.assert_close(a["logit_scale"], b["logit_scale"])
    assert b["logit_bias"] is None and float(a["logit_bias"].detach()) == 0.0


def test_stage1_official_file_fills_the_teacher_head_and_keeps_the_text_head(tmp_path):
    source = tiny(seed=5)
    torch.save(official_from(source, temp=False, head="teacher"), tmp_path / "stage1.pt")
    model = tiny(seed=6)
    text_before = model.text_head.weight.clone()
    report = init_from_checkpoint(model, tmp_path / "stage1.pt")
    assert report.loaded == ("encoder", "teacher_head")
    assert torch.equal(model.teacher_head.weight, source.teacher_head.weight)
    assert torch.equal(model.text_head.weight, text_before)
    assert any("text head: not in the checkpoint" in n for n in report.notes)


def test_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    source = tiny(seed=7)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--pa3d-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    source.save_pretrained(snapshot)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny(seed=8)
    report = init_from_checkpoint(model, "hf://someone/pa3d-tiny")
    assert report.origin.spec == "hf://someone/pa3d-tiny" and report.origin.kind == "pretrained"
    assert report.origin.sha256 == sha(snapshot / "model.safetensors")
    assert_taken(model, source)
    with pytest.raises(FileNotFoundError, match=r"cannot resolve hf://someone/absent .*not in the local cache"):
        init_from_checkpoint(model, "hf://someone/absent")


def test_fine_tuned_folder_records_its_origin(tmp_path):
    tiny(seed=1).save_pretrained(tmp_path / "start")
    model = tiny(seed=2)
    report = init_from_checkpoint(model, tmp_path / "start")
    model.save_pretrained(tmp_path / "tuned", metadata={"note": "fine-tuned on lpsb"})
    meta = read_metadata(tmp_path / "tuned")
    assert meta["init_checkpoint"] == report.origin.to_dict()
    assert meta["init_checkpoint"]["sha256"] == sha(tmp_path / "start" / "model.safetensors")
    assert meta["note"] == "fine-tuned on lpsb"
    assert read_metadata(tmp_path / "start") == {}
    again = load_pretrained(tmp_path / "tuned")  # metadata does not disturb loading
    assert_taken(again, model)


# ------------------------------------------------------------------------------------- text head width


def test_text_width_mismatch_names_both_widths_and_reinit_starts_a_new_head(tmp_path):
    source = tiny(seed=1)  # text head 64-d
    source.save_pretrained(tmp_path / "ckpt")
    model = tiny(seed=2, text_dim=48)
    with pytest.raises(ValueError, match=r"text head width: checkpoint 64 vs model 48 .*reinit_text_head=True"):
        init_from_checkpoint(model, tmp_path / "ckpt")
    report = init_from_checkpoint(model, tmp_path / "ckpt", reinit_text_head=True)
    assert report.reinitialised == ("text_head",) and "text_head" not in report.loaded
    assert any("text head re-initialised (48-d" in n for n in report.notes)
    assert_taken(model, source, ("encoder.", "logit."))
    w = model.text_head.weight.detach()
    assert w.shape == (48, 64) and torch.all(model.text_head.bias == 0)
    assert 0.017 < float(w.std()) < 0.023  # the model's own head init: trunc-normal, std 0.02 (3072 draws)


# ------------------------------------------------------------------------------------- property tests


@given(
    embed=st.sampled_from([16, 32]),
    depth=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
    text_dim=st.integers(1, 40),
    other=st.sampled_from(["embed_dim", "depth", "tokenizer_dim", "mlp_ratio", "qkv_bias", "pos_hidden_dim"]),
)
def test_property_same_architecture_loads_exactly_other_architecture_is_named(embed, depth, heads, text_dim, other,
                                                                              tmp_path_factory):
    kw = dict(embed_dim=embed, depth=depth, num_heads=heads, text_dim=text_dim, tokenizer_dim=16, pos_hidden_dim=8)
    folder = tmp_path_factory.mktemp("ckpt")
    source = tiny(seed=1, **kw)
    source.save_pretrained(folder)
    model = tiny(seed=2, **kw)
    report = init_from_checkpoint(model, folder)
    assert report.loaded == ("encoder", "text_head", "logit", "teacher_head")
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    changed = {"embed_dim": embed * 2, "depth": depth + 1, "tokenizer_dim": 24, "mlp_ratio": 3.0, "qkv_bias": True,
               "pos_hidden_dim": 12}[other]
    wrong = tiny(seed=3, **{**kw, other: changed})
    with pytest.raises(ValueError, match=rf"does not fit the model's architecture: .*{other}: checkpoint"):
        init_from_checkpoint(wrong, folder)
    # a training state has no model config: the keys and shapes are named
    torch.save(training_state_from(source), folder / "last.pt")
    with pytest.raises(ValueError, match=r"does not fit the model's architecture: (shape mismatches: encoder\.|"
                                         r"missing from the checkpoint: encoder\.|not in the model: encoder\.)"):
        init_from_checkpoint(wrong, folder / "last.pt")


@given(n_bad=st.integers(1, 5), value=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
       key=st.sampled_from(["encoder.norm.weight", "text_head.bias", "logit.log_scale",
                            "encoder.encoder.first_conv.1.running_var"]))
def test_property_non_finite_weights_are_refused_naming_the_key(n_bad, value, key, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nan")
    state = {k: v.clone().contiguous() for k, v in tiny(seed=1).state_dict().items()}
    flat = state[key].view(-1)
    flat[: min(n_bad, flat.numel())] = value
    torch.save(training_state_from(tiny(seed=1)) | {"model": state}, folder / "last.pt")
    count = min(n_bad, flat.numel())
    with pytest.raises(ValueError, match=rf"non-finite \(NaN/inf\) weights in {key} \({count} of {flat.numel()}\)"):
        init_from_checkpoint(tiny(seed=2), folder / "last.pt")


# ------------------------------------------------------------------------------------------ bad input


def test_architecture_of_another_size_names_keys_and_shapes(tmp_path):
    torch.save(training_state_from(tiny(seed=1)), tmp_path / "last.pt")
    small = create_model("patchalign3d_small", backend="torch", text_dim=64)
    with pytest.raises(ValueError) as err:
        init_from_checkpoint(small, tmp_path / "last.pt")
    msg = str(err.value)
    assert "does not fit the model's architecture" in msg
    assert "encoder.cls_token checkpoint (1, 1, 64) vs model (1, 1, 128)" in msg
    assert "missing from the checkpoint: encoder.blocks.blocks.2." in msg


def test_num_heads_from_the_folder_config_is_checked(tmp_path):
    tiny(seed=1).save_pretrained(tmp_path / "ckpt")  # 2 heads, same shapes as 4 heads
    with pytest.raises(ValueError, match=r"num_heads: checkpoint 2 vs model 4"):
        init_from_checkpoint(tiny(seed=2, num_heads=4), tmp_path / "ckpt")
    torch.save(official_from(tiny(seed=1)), tmp_path / "official.pt")  # args["num_heads"] = 2
    with pytest.raises(ValueError, match=r"num_heads: checkpoint 2 vs model 4"):
        init_from_checkpoint(tiny(seed=2, num_heads=4), tmp_path / "official.pt")


def test_logit_bias_the_model_cannot_hold(tmp_path):
    tiny(seed=1).save_pretrained(tmp_path / "ckpt")
    official_mode = tiny(seed=2, logit_mode="official")
    with pytest.raises(ValueError, match=r"has a logit bias \(-4\) but the model's logit_mode='official' has none"):
        init_from_checkpoint(official_mode, tmp_path / "ckpt")


def test_folders_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no weights: a save_pretrained folder has "
                                                r"model.safetensors and config.json, found nothing"):
        init_from_checkpoint(tiny(), tmp_path / "empty")
    run = tmp_path / "run" / "stage2"
    run.mkdir(parents=True)
    torch.save(training_state_from(tiny()), run / "last.pt")
    with pytest.raises(FileNotFoundError, match=r"found \['last.pt'\]; it holds a recipe checkpoint: pass .*last.pt"):
        init_from_checkpoint(tiny(), run)
    tiny().save_pretrained(run / "model")
    with pytest.raises(FileNotFoundError, match=r"holds no weights.*"):
        load_checkpoint(run)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        init_from_checkpoint(tiny(), tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\): an interrupted download or copy\?$"),
        (bytes(range(7, 71)), r"\(64 bytes\) cannot be read: truncated, corrupt or not written by torch.save"),
        ("truncated", r"cannot be read: truncated, corrupt or not written by torch.save"),
    ],
    ids=["empty", "random_bytes", "truncated"],
)
@pytest.mark.parametrize("loader", ["init", "official", "load_checkpoint"])
def test_unreadable_files(content, message, loader, tmp_path):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        torch.save(official_from(tiny()), tmp_path / "good.pt")
        content = (tmp_path / "good.pt").read_bytes()[:5000]
    path.write_bytes(content)
    call = {"init": lambda: init_from_checkpoint(tiny(), path), "official": lambda: load_official_checkpoint(path),
            "load_checkpoint": lambda: load_checkpoint(path)}[loader]
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "trusted" not in str(err.value)  # a broken file is not a trust question


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": [1, 2]}, r"'model' must map parameter names to tensors, got list"),
        ({"format": "pa3d-training-state/1"}, r"'model' must map parameter names to tensors, got NoneType"),
        ({"model": {"cls_token": torch.zeros(1, 1, 4), "norm.weight": "x"}},
         r"'model' must map parameter names to tensors; not tensors: norm.weight \(str\)"),
        ({"model": {"cls_token": torch.zeros(1)}, "proj": {"w": torch.zeros(2)}},
         r"'proj' must hold 'proj.weight' and 'proj.bias', got \['w'\]"),
        ({"model": {"cls_token": torch.zeros(1)}, "temp": 3.0}, r"'temp' must be \{'log_scale': tensor\}"),
        ([1, 2], r"not a checkpoint pa3d can initialise from: .* got list"),
        ({"weights": torch.zeros(1)}, r"not a checkpoint pa3d can initialise from: .* got keys \['weights'\]"),
    ],
    ids=["model_list", "state_without_model", "model_str_value", "proj_keys", "temp_float", "list", "unknown_dict"],
)
def test_wrong_content_types(payload, message, tmp_path):
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=message):
        init_from_checkpoint(tiny(), tmp_path / "x.pt")


def test_training_state_with_a_string_config(tmp_path):
    torch.save(training_state_from(tiny()) | {"config": "string"}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"'config' of a training state must be a dict, got str"):
        init_from_checkpoint(tiny(), tmp_path / "last.pt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(config="string"), r"'config' must be a JSON object of model settings, got str"),
        (lambda m: m["config"]["encoder"].update(embed_dim=-1),
         r"config.encoder.embed_dim must be an int >= 1, got -1"),
        (lambda m: m["config"]["encoder"].update(depth=1.5), r"config.encoder.depth must be an int >= 1, got 1.5"),
        (lambda m: m["config"].update(text_dim=0), r"config.text_dim must be an int >= 1, got 0"),
        (lambda m: m["config"]["encoder"].update(num_heads=3),
         r"embed_dim \(64\) must be divisible by num_heads \(3\)"),
        (lambda m: m["config"].update(logit_mode="x"), r"config.logit_mode must be 'paper' or 'official', got 'x'"),
        (lambda m: m.update(metadata=[1]), r"'metadata' must be a JSON object, got list"),
    ],
    ids=["config_string", "embed_dim_negative", "depth_float", "text_dim_zero", "heads_indivisible", "logit_mode",
         "metadata_list"],
)
def test_bad_folder_configs(edit, message, tmp_path):
    tiny().save_pretrained(tmp_path / "ckpt")
    cfg = tmp_path / "ckpt" / "config.json"
    meta = json.loads(cfg.read_text())
    edit(meta)
    cfg.write_text(json.dumps(meta))
    for call in (lambda: load_pretrained(tmp_path / "ckpt"), lambda: init_from_checkpoint(tiny(), tmp_path / "ckpt")):
        with pytest.raises(ValueError, match=message):
            call()


def test_weights_of_another_size_in_a_folder_are_a_value_error(tmp_path):
    """Same config, weights of another model (a tampered folder): named keys and shapes, not a RuntimeError."""
    tiny().save_pretrained(tmp_path / "ckpt")
    other = create_model("patchalign3d_tiny", backend="torch", text_dim=32)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not fit the model: shape mismatches: text_head.weight checkpoint "
                                         r"\(32, 64\) vs model \(64, 64\)"):
        load_pretrained(tmp_path / "ckpt")


def test_directory_and_training_state_given_to_the_official_loader(tmp_path):
    tiny().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"ckpt is a directory: load_official_checkpoint reads one official .pt "
                                         r"file; for a save_pretrained folder use load_pretrained"):
        load_official_checkpoint(tmp_path / "ckpt")
    torch.save(training_state_from(tiny()), tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"is a pa3d training state \(a recipe's last.pt\), not an official"):
        load_official_checkpoint(tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"is a file; from_pretrained reads a save_pretrained folder"):
        PatchAlign3D.from_pretrained(tmp_path / "last.pt")


class _Payload:
    """Unpickling this creates a marker file: code execution made visible."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_that_run_code_are_refused_unless_trusted(tmp_path):
    marker = tmp_path / "EXECUTED"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.pt")
    for call in (lambda: init_from_checkpoint(tiny(), tmp_path / "evil.pt"),
                 lambda: load_official_checkpoint(tmp_path / "evil.pt"),
                 lambda: load_checkpoint(tmp_path / "evil.pt"),
                 lambda: load_torch_file(tmp_path / "evil.pt")):
        with pytest.raises(ValueError, match=r"holds Python objects other than tensors and plain data "
                                             r"\(io.open\); unpickling them can run arbitrary code.*trusted=True"):
            call()
        assert not marker.exists()
    # a legacy official file with an argparse.Namespace loads only when trusted
    legacy = official_from(tiny(seed=1)) | {"args": argparse.Namespace(num_heads=2)}
    torch.save(legacy, tmp_path / "legacy.pt")
    with pytest.raises(ValueError, match=r"\(argparse.Namespace\)"):
        init_from_checkpoint(tiny(), tmp_path / "legacy.pt")
    model = tiny(seed=2)
    init_from_checkpoint(model, tmp_path / "legacy.pt", trusted=True)
    assert_taken(model, tiny(seed=1), ("encoder.", "text_head."))


def test_training_state_numpy_rng_loads_without_trust(tmp_path):
    torch.save(training_state_from(tiny()), tmp_path / "last.pt")
    payload = load_torch_file(tmp_path / "last.pt")
    assert payload["rng"]["numpy"][0] == "MT19937" and isinstance(payload["rng"]["numpy"][1], np.ndarray)


def test_argument_checks():
    with pytest.raises(ValueError, match=r"model must be a PatchAlign3D, got Linear"):
        init_from_checkpoint(torch.nn.Linear(2, 2), "x")
    with pytest.raises(ValueError, match=r"head must be 'auto', 'text' or 'teacher', got 'both'"):
        init_from_checkpoint(tiny(), "x", head="both")
    with pytest.raises(ValueError, match=r"checkpoint must be a path or an hf:// id, got an empty string"):
        init_from_checkpoint(tiny(), "")
    with pytest.raises(ValueError, match=r"hf:// checkpoint must be hf://ORG/REPO\[/FILE\], got 'hf://org'"):
        init_from_checkpoint(tiny(), "hf://org")


@pytest.mark.parametrize("kind", ["pretrained", "official"])
def test_loaders_refuse_non_finite_weights(kind, tmp_path):
    """Issue 18: a checkpoint with NaN weights used to segment every point as label 0 and exit 0."""
    source = tiny(seed=1)
    with torch.no_grad():
        source.encoder.norm.weight[3] = float("nan")
    spec, _ = write_kind(kind, source, tmp_path)
    with pytest.raises(ValueError, match=r"non-finite \(NaN/inf\) weights in (encoder\.)?norm.weight \(1 of 64\)"):
        load_checkpoint(spec, num_groups=32, group_size=16)
    ckpt = official_from(tiny(seed=1))
    ckpt["temp"]["log_scale"] = torch.tensor(float("inf"))
    with pytest.raises(ValueError, match=r"non-finite \(NaN/inf\) weights in temp.log_scale"):
        load_official_checkpoint(ckpt)


@given(data=st.binary(min_size=1, max_size=300), zip_header=st.booleans())
def test_property_any_bytes_give_one_clear_message(data, zip_header, tmp_path_factory):
    """Fuzz: whatever the bytes (also behind a zip signature, as torch.save files start), reading gives the
    model or a ValueError saying the file cannot be read, never another exception."""
    path = tmp_path_factory.mktemp("fuzz") / "x.pt"
    path.write_bytes((b"PK\x03\x04" if zip_header else b"") + data)
    for call in (lambda: load_torch_file(path), lambda: init_from_checkpoint(tiny(), path)):
        with pytest.raises(ValueError, match=r"cannot be read: truncated, corrupt or not written by torch.save|"
                                             r"not a checkpoint pa3d can initialise from"):
            call()
