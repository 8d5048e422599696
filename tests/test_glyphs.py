"""The rendered-glyph open-set data set: many distinct classes, disjoint pools, augmentation, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairloss.data.glyphs import (
    _classes,
    candidate_characters,
    font_family,
    glyph_classes,
    glyph_families,
    glyph_fonts,
    glyph_pools,
    open_set_glyphs,
    render_glyphs,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids waiting on a second, busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_at_least_200_distinct_classes_and_look_alikes_merged() -> None:
    classes = _classes()
    assert len(classes) >= 200
    assert len(set(classes)) == len(classes)
    assert "A" in classes and "\u0391" not in classes and "\u0410" not in classes  # Latin A = Greek/Cyrillic A
    assert len(glyph_fonts()) >= 12
    assert len(candidate_characters()) > len(classes)


def test_pools_are_disjoint_and_cover_the_classes() -> None:
    pools = glyph_pools(100, 100, split_seed=3)
    train, test, pretrain = set(pools.train), set(pools.test), set(pools.pretrain)
    assert len(train) == len(test) == 100
    assert not (train & test) and not (train & pretrain) and not (test & pretrain)
    assert train | test | pretrain == set(_classes())
    assert glyph_pools(100, 100, split_seed=3) == pools
    assert glyph_pools(100, 100, split_seed=4).test != pools.test
    assert len(glyph_pools(10, 10, n_pretrain=5).pretrain) == 5
    with pytest.raises(ValueError, match="distinct characters"):
        glyph_pools(10_000, 10)


def test_render_shapes_range_and_determinism() -> None:
    images, labels = render_glyphs(["A", "b", "\u05d0"], 5, size=12, seed=1)
    assert images.shape == (15, 1, 12, 12) and images.dtype == torch.float32
    assert torch.equal(labels, torch.arange(3).repeat_interleave(5))
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    again, _ = render_glyphs(["A", "b", "\u05d0"], 5, size=12, seed=1)
    assert torch.equal(images, again)
    other, _ = render_glyphs(["A", "b", "\u05d0"], 5, size=12, seed=2)
    assert not torch.equal(images, other)


def test_augmentation_varies_samples_but_keeps_classes_apart() -> None:
    images, labels = render_glyphs(["O", "X"], 8, size=16, seed=0)
    flat = images.flatten(1).numpy()
    assert np.std(flat[:8], axis=0).mean() > 0.02  # samples of a class differ
    centroid_o, centroid_x = flat[:8].mean(0), flat[8:].mean(0)
    nearest = [np.argmin([np.linalg.norm(f - centroid_o), np.linalg.norm(f - centroid_x)]) for f in flat]
    assert (np.array(nearest) == labels.numpy()).mean() >= 0.9


def test_open_set_split_has_disjoint_labels() -> None:
    split = open_set_glyphs(n_train=6, n_test=4, samples_per_class=3, size=10)
    assert split.train_x.shape == (18, 100) and split.test_x.shape == (12, 100)
    assert set(split.train_y.tolist()) == set(range(6))
    assert set(split.test_y.tolist()) == set(range(6, 10))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="samples_per_class"):
        render_glyphs(["A"], 0)
    with pytest.raises(ValueError, match="size"):
        render_glyphs(["A"], 1, size=2)
    with pytest.raises(ValueError, match=r"no font of the .bundled. catalog"):
        render_glyphs(["\U000e0041"], 1)  # a tag character: in no text font


def test_extended_catalog_has_the_font_packs_and_hundreds_of_varied_classes() -> None:
    fonts = glyph_fonts("extended")
    assert len(fonts) >= 90 and set(glyph_fonts()) < set(fonts)
    assert len({font_family(f) for f in fonts}) >= 15
    classes = glyph_classes("extended")
    assert len(classes) >= 2000 and len(glyph_classes()) < 400
    varied = [c for c in classes if glyph_families(c, "extended") >= 5]
    assert len(varied) >= 700
    pools = glyph_pools(360, 300, split_seed=0, catalog="extended", min_families=5)
    train, test, pretrain = set(pools.train), set(pools.test), set(pools.pretrain)
    assert len(train) == 360 and len(test) == 300 and len(pretrain) >= 1000
    assert not (train & test) and not (train & pretrain) and not (test & pretrain)
    assert all(glyph_families(c, "extended") >= 5 for c in train | test)
    images, labels = render_glyphs(pools.test[:3], 4, size=12, catalog="extended", seed=0)
    assert images.shape == (12, 1, 12, 12) and torch.equal(labels, torch.arange(3).repeat_interleave(4))
    with pytest.raises(ValueError, match="font families"):
        glyph_pools(600, 600, catalog="extended", min_families=5)
    with pytest.raises(ValueError, match="catalog"):
        glyph_fonts("everything")


def test_glyph_retrieval_splits_are_disjoint_and_deterministic() -> None:
    from pairloss.data.glyphs import glyph_retrieval_splits

    splits = glyph_retrieval_splits(6, 3, 5, 2, min_families=5, catalog="extended")
    chars = splits.characters
    assert [len(chars[k]) for k in ("fit", "validation", "test")] == [6, 3, 5]
    assert not (set(chars["fit"]) & set(chars["validation"])) and not (set(chars["fit"]) & set(chars["test"]))
    assert not (set(chars["validation"]) & set(chars["test"]))
    assert splits.fit.x.shape == (12, 1, 16, 16) and splits.test.y.tolist() == sorted(list(range(5)) * 2)
    assert splits.validation.classes == 3
    again = glyph_retrieval_splits(6, 3, 5, 2, min_families=5, catalog="extended")
    assert torch.equal(again.test.x, splits.test.x)
    with pytest.raises(ValueError, match="validation_classes"):
        glyph_retrieval_splits(6, 1, 5, 2)
