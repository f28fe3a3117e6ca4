"""Cross-category splits: checks, split files, selection of categories."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data import (
    LPSB_CATEGORIES,
    LPSB_CROSS_CATEGORY,
    CategorySplit,
    SyntheticPartDataset,
    check_category_split,
    load_category_split,
    save_category_split,
    select_categories,
    shared_part_names,
)

CATS = [f"c{i}" for i in range(8)]


@given(data=st.data())
def test_check_fills_train_with_every_other_category(data):
    have = data.draw(st.lists(st.sampled_from(CATS), min_size=2, max_size=8, unique=True))
    ev = data.draw(st.lists(st.sampled_from(have), min_size=1, max_size=len(have) - 1, unique=True))
    out = check_category_split(CategorySplit((), tuple(ev)), have)
    assert set(out.train) | set(out.eval) == set(have)
    assert not set(out.train) & set(out.eval)
    assert list(out.train) == [c for c in have if c not in ev]  # data order kept


@given(data=st.data())
def test_select_categories_equals_a_filter(data):
    ds = SyntheticPartDataset(28, num_points=32, cache=False)
    every = sorted({s.category for s in ds})
    pick = data.draw(st.lists(st.sampled_from(every), min_size=1, max_size=4, unique=True))
    sub = select_categories(ds, pick)
    expected = [i for i in range(len(ds)) if ds[i].category in pick]
    assert list(sub.indices) == expected
    assert {s.category for s in sub} == set(pick)


def test_split_file_round_trip(tmp_path):
    path = save_category_split(LPSB_CROSS_CATEGORY, tmp_path / "split.json")
    assert load_category_split(path) == LPSB_CROSS_CATEGORY
    (tmp_path / "eval_only.json").write_text(json.dumps({"eval": ["Cup"]}))
    assert load_category_split(tmp_path / "eval_only.json") == CategorySplit((), ("Cup",))


def test_lpsb_split_covers_the_categories_and_its_eval_names_occur_in_training():
    assert set(LPSB_CROSS_CATEGORY.train) | set(LPSB_CROSS_CATEGORY.eval) == set(LPSB_CATEGORIES)
    prompts = {"Teddy": ["ear", "hand", "head", "leg", "torso"], "Bird": ["body", "head", "leg", "tail", "wing"],
               "Cup": ["body", "handle"], "Octopus": ["body", "leg"], "Human": ["head", "hand", "torso"],
               "Airplane": ["body", "wing"], "FourLeg": ["ear or horn", "leg", "tail"], "Vase": ["handle"],
               "Armadillo": ["ear"]}
    shared = shared_part_names({}, LPSB_CROSS_CATEGORY, prompts)
    assert all(shared[c] == prompts[c] for c in LPSB_CROSS_CATEGORY.eval)


def test_lpsb_split_against_the_data(shared_data):
    from pa3d_data import LPSBDataset, category_names

    ds = LPSBDataset(shared_data / "lpsb", num_points=16)
    names = {c: v[0] for c, v in category_names(ds).items()}
    prompts = {c: v[1] for c, v in category_names(ds).items()}
    split = check_category_split(LPSB_CROSS_CATEGORY, ds.categories, names)
    shared = shared_part_names(names, split, prompts)
    assert all(shared[c] == prompts[c] for c in split.eval)  # every evaluated name occurs in training


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: check_category_split(CategorySplit(("a",), ("zz",)), ["a", "b"]),
         r"eval categories \['zz'\] are not in the data \(it has \['a', 'b'\]\)"),
        (lambda: check_category_split(CategorySplit(("q",), ("a",)), ["a", "b"]),
         r"train categories \['q'\] are not in the data"),
        (lambda: check_category_split(CategorySplit((), ("a", "b")), ["a", "b"]), r"no training category left"),
        (lambda: check_category_split(CategorySplit(("a",), ("b",)), ["a", "b"], {"a": ["x"], "b": []}),
         r"evaluation category 'b' has no usable part names \(got \[\]\)"),
        (lambda: check_category_split(CategorySplit(("a",), ("b",)), ["a", "b"], {"b": ["", "  "]}),
         r"evaluation category 'b' has no usable part names"),
        (lambda: CategorySplit(("a", "b"), ("b",)), r"categories \['b'\] are both trained on and evaluated"),
        (lambda: CategorySplit(("a", "a"), ("b",)), r"train categories repeat \['a'\]"),
        (lambda: CategorySplit("ab", ("b",)), r"train categories must be a list of non-empty names, got 'ab'"),
        (lambda: select_categories(SyntheticPartDataset(28, num_points=8, cache=False), ["nope"]),
         r"categories \['nope'\] have no shape in the dataset"),
    ],
)
def test_bad_splits_name_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", r"cannot be read as JSON"),
        ('{"train": ["a"]}', r'with a non-empty "eval" list'),
        ('{"eval": ["a"], "test": []}', r"unknown keys \['test'\]"),
        ('{"eval": ["a"], "train": "b"}', r'"train" must be a list'),
    ],
)
def test_bad_split_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        load_category_split(path)
    assert str(path) in str(err.value)
