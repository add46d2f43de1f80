"""The demo domain: deterministic drawings, a held-out split that never leaks, prompts that parse back."""

from __future__ import annotations

import numpy as np
import pytest

from generation import demo_domain as dd


def test_same_seed_draws_identical_batches_and_another_seed_differs():
    a = dd.sample_batch(24, np.random.default_rng(7), "train", {"shape": 1, "position": 1, "word": 1})
    b = dd.sample_batch(24, np.random.default_rng(7), "train", {"shape": 1, "position": 1, "word": 1})
    c = dd.sample_batch(24, np.random.default_rng(8), "train", {"shape": 1, "position": 1, "word": 1})
    assert a[0].shape == (24, 32, 32, 3) and a[0].dtype == np.uint8
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_every_pixel_of_a_drawing_is_a_palette_colour_and_the_background_fills_the_border():
    palette = {tuple(v) for v in dd.PALETTE.values()}
    rng = np.random.default_rng(0)
    for spec in dd.all_specs("all")[::97]:
        img = dd.render(spec, rng)
        assert {tuple(p) for p in img.reshape(-1, 3)} <= palette
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert (border == dd.PALETTE[spec.background]).all(axis=1).mean() > 0.5


def test_heldout_prompts_never_occur_in_training_but_each_of_their_attribute_pairs_does():
    train, held = dd.all_prompts("train"), dd.all_prompts("heldout")
    assert len(held) == sum(dd.HELDOUT_COUNT.values())
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(dd.all_prompts("all"))
    train_pairs = {p for s in dd.all_specs("train") for p in s.attribute_pairs()}
    for spec in dd.all_specs("heldout"):
        assert spec.attribute_pairs() <= train_pairs, spec
    # the training sampler only ever draws training combinations
    _, captions, _ = dd.sample_batch(400, np.random.default_rng(1), "train", {"shape": 1, "word": 1})
    assert not set(captions) & set(held)


def test_the_split_is_fixed_so_a_checkpoint_trained_today_is_scored_on_the_same_heldout_set():
    assert dd.all_prompts("heldout", ["shape"])[:3] == [
        "a green square on a red background",
        "a blue circle on a red background",
        "a yellow circle on a red background",
    ]


def test_all_kinds_of_prompt_are_present():
    assert len(dd.all_specs("all", ["shape"])) == 6 * 5 * 3
    captions = dd.all_prompts("train")
    assert "a red circle on a blue background" in captions or "a red circle on a blue background" in dd.all_prompts(
        "heldout"
    )
    assert any(" above a " in c for c in captions) and any(" left of a " in c for c in captions)
    assert any(c.startswith('the word "CAT"') for c in captions)


def test_parse_prompt_inverts_the_caption_and_refuses_other_text():
    for spec in dd.all_specs("all")[::53]:
        assert dd.parse_prompt(spec.caption) == spec
    assert dd.parse_prompt('The word "cat" in Red letters on a white background.') == dd.WordSpec("CAT", "red", "white")
    assert dd.parse_prompt("a red circle above a blue square on a white background") == dd.PositionSpec(
        "red", "circle", "above", "blue", "square", "white"
    )
    with pytest.raises(ValueError, match="not a demo prompt"):
        dd.parse_prompt("a photo of an astronaut riding a horse")
    with pytest.raises(ValueError, match="unknown colour"):
        dd.parse_prompt("a purple circle on a blue background")
    with pytest.raises(ValueError, match="differ"):
        dd.parse_prompt("a red circle on a red background")


def test_words_are_drawn_with_the_bitmap_font_at_the_expected_size():
    img = dd.render(dd.WordSpec("CAT", "red", "white"), np.random.default_rng(0))
    ys, xs = np.nonzero((img == dd.PALETTE["red"]).all(-1))
    assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == dd.word_box("CAT") == (22, 10)


def test_demo_prompt_rows_carry_categories_typography_flags_and_heldout_notes():
    rows = dd.demo_prompt_rows()
    assert rows == dd.demo_prompt_rows()
    assert {r["category"] for r in rows} == {"Colours & Shapes", "Positions", "Writing & Symbols"}
    heldout = set(dd.all_prompts("heldout"))
    for r in rows:
        assert set(r) == {"text", "category", "challenge", "note", "needs_text", "rendered_text"}
        assert ("held-out" in r["note"]) == (r["text"] in heldout)
        assert r["needs_text"] == (r["category"] == "Writing & Symbols")
        if r["needs_text"]:
            assert f'"{r["rendered_text"]}"' in r["text"]
    assert any("held-out" in r["note"] for r in rows) and any("training" in r["note"] for r in rows)
