"""Run configuration: the resolution order, YAML checks, user losses, and every refusal with its message pinned.

Refusals run through ``pa3d_train.main`` in-process (what the recipe calls): one line on stderr, exit status 2,
nothing written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_train import DEFAULTS, ConfigError, main, resolve_config, resolve_loss
from pa3d_train.config import _key_value

RECIPE_CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
TINY = ["--model", "patchalign3d_tiny", "--num-points", "256", "--train-shapes", "28", "--eval-shapes", "14",
        "--heldout-shapes", "8", "--stage1-epochs", "1", "--stage2-epochs", "1", "--views", "2", "--image-size",
        "64", "--teacher", "tiny", "--batch-size", "7", "--text-model", "fixed:32", "--figures", "0"]


def test_order_is_defaults_then_default_yaml_then_preset_then_file_then_command_line(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "default.yaml").write_text("seed: 1\nbatch_size: 4\nviews: 3\nlr_head: 0.1\n")
    (configs / "fast.yaml").write_text("seed: 2\nbatch_size: 5\nviews: 4\n")
    (tmp_path / "mine.yaml").write_text("seed: 3\nbatch_size: 6\n")
    cfg = resolve_config(["stage2", "--preset", "fast", "--config", str(tmp_path / "mine.yaml"), "--seed", "4"],
                         config_dir=configs)
    assert (cfg["seed"], cfg["batch_size"], cfg["views"], cfg["lr_head"]) == (4, 6, 4, 0.1)
    assert cfg["command"] == "stage2" and cfg["image_size"] == DEFAULTS["image_size"]


def test_recipe_yaml_files_hold_known_keys_and_the_paper_preset():
    cfg = resolve_config([], config_dir=RECIPE_CONFIGS)
    assert set(cfg) == set(DEFAULTS) | {"command"}
    paper = resolve_config(["--preset", "paper"], config_dir=RECIPE_CONFIGS)
    assert (paper["model"], paper["num_points"], paper["teacher"]) == ("patchalign3d_base", 2048, "dinov2_vitb14")


@given(key=st.from_regex(r"[a-z_]{1,12}", fullmatch=True), value=st.integers(-5, 5))
def test_dataset_option_values_are_parsed_as_yaml(key, value):
    assert _key_value(f"{key}={value}") == (key, value)
    assert _key_value(f"{key}=Cap") == (key, "Cap")


def _refused(argv, capsys, tmp_path, config_dir=None):
    out = tmp_path / "o"
    status = main([*argv, "--out", str(out)] if "--out" not in argv else argv, config_dir=config_dir)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("patchalign3d: error: "), err
    assert not (out / "config.yaml").exists() and not (out / "stage1").exists(), "work started"
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--loss", "nope"], r"--loss 'nope' is not a registered loss; valid: \[.*'multi_positive_sigmoid'"),
        (["--loss-args", '{"foo": 1}'], r"--loss-args \{\"foo\": 1\}: multi_positive_sigmoid does not take "
                                        r"\['foo'\]; valid: \[.*'pos_weight'"),
        (["--train-shapes", "0"], "--train-shapes must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--batch-size", "-7"], "--batch-size must be >= 1, got -7"),
        (["--views", "0"], "--views must be >= 1, got 0"),
        (["--num-points", "8"], r"--num-groups 32 must be in \[1, --num-points 8\]: each shape forms 32 patches"),
        (["--stage1-epochs", "-1"], r"--stage1-epochs must be >= 0 \(0 skips training\), got -1"),
        (["--teacher-size", "100"], "--teacher-size must be a multiple of 14"),
        (["--dataset-option", "foo=1"], r"--dataset-option foo=1: dataset 'synthetic' takes no 'foo'; valid keys: "),
        (["--label-noise", "1.5"], r"--label-noise must be in \[0, 1\)"),
        (["--dataset", "lpsb"], "--dataset lpsb needs --train-root"),
        (["--max-minutes", "0"], "--max-minutes must be > 0, got 0.0"),
        (["--loss", "no_such_module_xyz:Loss"], "--import no_such_module_xyz: cannot import it"),
        (["--import", "no_such_module_xyz"], "--import no_such_module_xyz: cannot import it"),
        (["eval", "--eval-root", "/nowhere"], "eval --eval-root /nowhere: name its format with --eval-dataset"),
        (["eval", "--checkpoint", "/nowhere/model"], "--checkpoint /nowhere/model does not exist"),
        (["stage2", "--stage1-checkpoint", "/nowhere.pt"], "--stage1-checkpoint /nowhere.pt does not exist"),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(argv, message, capsys, tmp_path):
    import re

    line = _refused([*TINY, *argv], capsys, tmp_path)
    assert re.search(message, line), line


def test_bad_config_files_are_refused(capsys, tmp_path):
    assert "--config /no/such.yaml: no such file" in _refused(["--config", "/no/such.yaml"], capsys, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    assert "not valid YAML" in _refused(["--config", str(bad)], capsys, tmp_path)
    bad.write_text("- 1\n- 2\n")
    assert "expected a mapping of keys to values, got list" in _refused(["--config", str(bad)], capsys, tmp_path)
    bad.write_text("sede: 1\n")
    assert "unknown keys ['sede']; valid keys: [" in _refused(["--config", str(bad)], capsys, tmp_path)
    bad.write_text("batch_size: many\n")
    assert "--batch-size must be an integer, got 'many'" in _refused(["--config", str(bad)], capsys, tmp_path)
    bad.write_text("freeze_policy: half\n")
    assert "--freeze-policy 'half' is not valid; expected one of" in _refused(["--config", str(bad)], capsys,
                                                                               tmp_path)


def test_out_must_be_a_folder_and_os_errors_are_one_line(capsys, tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    assert f"--out {file} is an existing file; expected a folder" in _refused([*TINY, "--out", str(file)], capsys,
                                                                                tmp_path)
    line = _refused([*TINY, "--batch-size", "7", "--out", str(file / "sub")], capsys, tmp_path)
    assert "NotADirectoryError" in line or "FileExistsError" in line


def test_batch_larger_than_the_training_set_names_both_numbers(capsys, tmp_path):
    line = _refused([*TINY, "--batch-size", "100"], capsys, tmp_path)
    assert "--batch-size 100 is larger than the training set: 28 shapes give 28 per process for 100" in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="--train-shapes must be >= 1"):
        main([*TINY, "--train-shapes", "0", "--debug", "--out", str(tmp_path / "o")])


def test_a_loss_from_the_users_module(tmp_path, monkeypatch, request):
    import sys

    from pa3d_losses import LOSSES

    monkeypatch.chdir(tmp_path)

    def forget_the_user_s_module():  # other tests in this process see the library's losses only
        LOSSES.pop("registered_by_user_test", None)
        sys.modules.pop("user_losses_for_test", None)
    request.addfinalizer(forget_the_user_s_module)
    Path("user_losses_for_test.py").write_text(textwrap.dedent("""
        import torch
        from pa3d_losses import register_loss

        class Scaled(torch.nn.Module):
            def __init__(self, *, factor: float = 1.0):
                super().__init__()
                self.factor = factor

            def forward(self, outputs, batch, *, return_dict=False):
                loss = self.factor * outputs["x"].mean()
                return {"scaled_loss": loss} if return_dict else loss

        @register_loss("registered_by_user_test")
        class Registered(Scaled):
            pass
    """))
    loss = resolve_loss("user_losses_for_test:Scaled", {"factor": 3.0})
    assert loss.factor == 3.0 and float(loss({"x": torch.ones(2)}, {})) == 3.0
    with pytest.raises(ConfigError, match=r"does not take \['gamma'\]; valid: \['factor'\]"):
        resolve_loss("user_losses_for_test:Scaled", {"gamma": 1})
    with pytest.raises(ConfigError, match="module 'user_losses_for_test' has no 'Nope'; it has"):
        resolve_loss("user_losses_for_test:Nope")
    cfg = resolve_config(["stage2", "--import", "user_losses_for_test", "--loss", "registered_by_user_test",
                          "--out", str(tmp_path / "o")])
    assert cfg["imports"] == ["user_losses_for_test"] and cfg["loss"] == "registered_by_user_test"


@given(depth=st.integers(1, 3), hidden=st.tuples(*[st.integers(1, 12)] * 3))
def test_model_option_builds_the_registered_model_with_those_keywords(depth, hidden):
    from pa3d_train.stages import new_model

    argv = ["--model", "patchalign3d_tiny", "--model-option", f"depth={depth}",
            "--model-option", f"tokenizer_hidden_dims=[{hidden[0]},{hidden[1]},{hidden[2]}]"]
    cfg = resolve_config(argv, config_dir=RECIPE_CONFIGS)
    assert cfg["model_option"] == {"depth": depth, "tokenizer_hidden_dims": list(hidden)}
    model = new_model(cfg, text_dim=8, teacher_dim=4)
    assert len(model.encoder.blocks.blocks) == depth and model.encoder.encoder.hidden_dims == hidden
    assert model.text_dim == 8  # the run's own keys still apply
    plain = new_model(resolve_config(["--model", "patchalign3d_tiny"], config_dir=RECIPE_CONFIGS), text_dim=8,
                      teacher_dim=4)
    assert plain.encoder.encoder.hidden_dims == (128, 256, 512) and len(plain.encoder.blocks.blocks) == 2


@pytest.mark.parametrize(("option", "message"), [
    ("depthh=2", r"--model-option: unknown model argument\(s\) \['depthh'\]"),
    ("tokenizer_hidden_dims=[1,2]", "--model-option: tokenizer_hidden_dims must be three ints >= 1"),
    ("depth=0", "--model-option: depth must be an int >= 1, got 0"),
    ("num_groups=8", "--model-option num_groups: set by --num-groups, not --model-option"),
    ("text_dim=8", "--model-option text_dim: set by the text model, not --model-option"),
])
def test_bad_model_options_are_refused_before_work(option, message, capsys, tmp_path):
    line = _refused([*TINY, "--model-option", option], capsys, tmp_path, config_dir=RECIPE_CONFIGS)
    assert re.search(message, line), line
