"""Evaluation by votes: several segmentation passes per shape over reordered points, similarities averaged."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pa3d_data import PartSample
from pa3d_layers import prior_correction
from pa3d_models import FixedTextEncoder, SegmentResult, create_model
from pa3d_train import ConfigError, resolve_config
from pa3d_train.evaluate import evaluate_segmentation, segment_votes


class PointwiseModel:
    """Similarities of a point depend on its coordinates only (not on the order the points come in)."""

    def segment(self, points, part_names, text, *, assign="nearest", k=3):
        sims = torch.stack([points[:, 0], points[:, 1] - points[:, 2]], dim=1)[:, : len(part_names)]
        return SegmentResult(sims.argmax(1), sims.amax(1), sims)


class FirstPointModel:
    """Marks the point that comes first (where farthest-point sampling starts): similarity 1 there, else 0."""

    def segment(self, points, part_names, text, *, assign="nearest", k=3):
        sims = torch.zeros(points.shape[0], len(part_names))
        sims[0] = 1.0
        return SegmentResult(sims.argmax(1), sims.amax(1), sims)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 300), votes=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_votes_return_each_point_s_own_similarities(n, votes, seed):
    # reference: an order-independent model gives, in every pass, each point its own similarities; the mean of
    # the passes is the single pass exactly only if every reordered pass is put back in the input order
    points = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))
    single = PointwiseModel().segment(points, ["a", "b"], None).similarities
    mean = segment_votes(PointwiseModel(), points, ["a", "b"], None, votes=votes, seed=seed)
    torch.testing.assert_close(mean, single)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 300), votes=st.integers(2, 8), seed=st.integers(0, 2**31))
def test_each_vote_starts_from_another_point(n, votes, seed):
    mean = segment_votes(FirstPointModel(), torch.rand(n, 3), ["a"], None, votes=votes, seed=seed)[:, 0]
    assert float(mean.sum()) == pytest.approx(1.0)  # one first point per pass, weight 1 / votes each
    assert float(mean[0]) >= 1.0 / votes  # pass 0 takes the points as given
    again = segment_votes(FirstPointModel(), torch.rand(n, 3), ["a"], None, votes=votes, seed=seed)[:, 0]
    torch.testing.assert_close(again, mean)  # the orders depend on the seed only


def test_votes_on_a_real_model_change_the_patches_and_one_vote_is_the_model_s_pass():
    torch.manual_seed(0)
    model = create_model("patchalign3d_tiny").eval()
    text = FixedTextEncoder(dim=64)
    points = torch.rand(400, 3)
    with torch.no_grad():
        single = model.segment(points, ["leg", "seat", "back"], text).similarities
    torch.testing.assert_close(segment_votes(model, points, ["leg", "seat", "back"], text, votes=1), single)
    voted = segment_votes(model, points, ["leg", "seat", "back"], text, votes=4)
    assert voted.shape == single.shape
    assert not torch.allclose(voted, single)  # other FPS centres: other patches, other similarities
    assert bool((voted.abs() <= 1 + 1e-5).all())  # a mean of cosines


@pytest.mark.parametrize("votes", [0, -1, 1.5, True])
def test_bad_vote_counts_are_refused(votes):
    with pytest.raises(ValueError, match="votes must be an int >= 1"):
        segment_votes(PointwiseModel(), torch.rand(10, 3), ["a"], None, votes=votes)


def test_ragged_or_batched_points_are_refused():
    with pytest.raises(ValueError, match=r"one shape \(N, 3\)"):
        segment_votes(PointwiseModel(), torch.rand(2, 10, 3), ["a"], None, votes=2)


def test_evaluation_with_votes_scores_the_voted_labels():
    points = torch.rand(60, 3, generator=torch.Generator().manual_seed(1))
    labels = (points[:, 0] < points[:, 1] - points[:, 2]).long()  # where PointwiseModel's "b" wins
    sample = PartSample(points, labels, ["a", "b"], "cat", "s0")
    for votes in (1, 3):
        summary = evaluate_segmentation(PointwiseModel(), [sample], FixedTextEncoder(dim=8), votes=votes)
        assert summary["instance_miou"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="votes must be an int >= 1"):
        evaluate_segmentation(PointwiseModel(), [sample], FixedTextEncoder(dim=8), votes=0)


def test_eval_votes_flag_is_checked():
    assert resolve_config(["all", "--eval-votes", "3"])["eval_votes"] == 3
    with pytest.raises(ConfigError, match="--eval-votes must be an int >= 1"):
        resolve_config(["all", "--eval-votes", "0"])


# ------------------------------------------------------------------------------------ calibration at evaluation


class BiasedModel(PointwiseModel):
    """PointwiseModel with name "a" raised by 0.5 at every point (a name the text model favours)."""

    def logit_params(self):
        return torch.tensor(10.0), None

    def segment(self, points, part_names, text, *, assign="nearest", k=3, calibration="none"):
        sims = super().segment(points, part_names, text).similarities + torch.tensor([0.5, 0.0])
        labels = (prior_correction(sims, 10.0) if calibration == "prior" else sims).argmax(1)
        return SegmentResult(labels, sims.amax(1), sims)


@pytest.mark.parametrize("votes", [1, 3])
def test_calibration_reads_the_same_similarities_and_reports_both(votes):
    points = torch.rand(200, 3, generator=torch.Generator().manual_seed(2))
    labels = (points[:, 0] < points[:, 1] - points[:, 2]).long()
    sample = PartSample(points, labels, ["a", "b"], "cat", "s0")
    text = FixedTextEncoder(dim=8)
    plain = evaluate_segmentation(BiasedModel(), [sample], text, votes=votes)
    fixed = evaluate_segmentation(BiasedModel(), [sample], text, votes=votes, calibration="prior")
    assert plain["calibration"] == "none" and "uncalibrated" not in plain
    assert fixed["uncalibrated"]["instance_miou"] == pytest.approx(plain["instance_miou"])
    assert fixed["instance_miou"] > plain["instance_miou"] + 0.1  # the raised name no longer takes the shape
    with pytest.raises(ValueError, match=r"calibration must be one of \['none', 'prior'\], got 'z'"):
        evaluate_segmentation(BiasedModel(), [sample], text, calibration="z")


def test_real_model_segment_calibration_is_the_prior_correction_of_its_similarities():
    torch.manual_seed(0)
    model = create_model("patchalign3d_tiny").eval()
    text = FixedTextEncoder(dim=64)
    points = torch.rand(2, 300, 3)
    names = ["leg", "seat", "back"]
    plain = model.segment(points, names, text)
    fixed = model.segment(points, names, text, calibration="prior")
    torch.testing.assert_close(fixed.similarities, plain.similarities)
    scale = model.logit_params()[0].detach()
    for b in range(2):  # the prior is each shape's own
        expected = prior_correction(plain.similarities[b], scale).argmax(-1)
        assert torch.equal(fixed.labels[b], expected)
        torch.testing.assert_close(fixed.scores[b], torch.sigmoid(
            scale * plain.similarities[b].gather(-1, expected[:, None])[:, 0] + model.logit_params()[1]))
    ragged = model.segment(points.reshape(-1, 3), names, text, batch=torch.arange(2).repeat_interleave(300),
                           calibration="prior")
    assert all(torch.equal(r.labels, fixed.labels[b]) for b, r in enumerate(ragged))
    with pytest.raises(ValueError, match=r"calibration must be one of \['none', 'prior'\], got 'softmax'"):
        model.segment(points, names, text, calibration="softmax")


def test_eval_calibration_flag_default_and_paper_preset():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "recipes" / "configs"
    assert resolve_config(["all"], config_dir=configs)["eval_calibration"] == "prior"
    assert resolve_config(["all", "--preset", "paper"], config_dir=configs)["eval_calibration"] == "none"
    assert resolve_config(["all", "--eval-calibration", "none"], config_dir=configs)["eval_calibration"] == "none"
    assert resolve_config(["all"])["eval_calibration"] == "none"  # the library's DEFAULTS: the official rule
    with pytest.raises(SystemExit):
        resolve_config(["all", "--eval-calibration", "zscore"])


def test_eval_calibration_from_a_yaml_file_is_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("eval_calibration: zscore\n")
    message = r"--eval-calibration 'zscore' is not valid; expected one of \['none', 'prior'\]"
    with pytest.raises(ConfigError, match=message):
        resolve_config(["all", "--config", str(bad)])
