"""Training on a tiny phantom: the loss goes down, checkpoints carry their card, resume continues."""
from __future__ import annotations

import csv
import dataclasses
import errno
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from OrbitSegLib import models, qa, structures
from OrbitSegLib.batch.studies import StudyListError
from OrbitSegLib.cli import main
from OrbitSegLib.errors import CancelledError, OrbitSegError
from OrbitSegLib.training import GridSpec, TrainConfig, fold_split, studies_from_phantom, train
from OrbitSegLib.training import loop as training_loop
from OrbitSegLib.training.augment import (TensorEye, augmentation, augmented_patch, fit_inplane, one_hot,
                                          sample_patch, seq_unet_batch, sv_net_batch)
from OrbitSegLib.training.data import Study, _read_pair, prepare, studies_from_list
from OrbitSegLib.phantom import write_dataset
from OrbitSegLib.phantom.case import case_scene
from OrbitSegLib.training.losses import SegmentationLoss, known_channels

TINY_SV = {"widths": [4, 8, 8, 16, 16]}
TINY_SEQ = {"widths": [4, 8, 8], "lstm1_hidden": 8, "lstm2_hidden": 4}
SHARED_CACHE = None
"""Set by the :func:`shared_cache` fixture."""
SPEC = GridSpec((1.0, 1.0, 2.0), (48.0, 400.0), 16)
SOFT_SPEC = dataclasses.replace(SPEC, soft_targets=True)


@pytest.fixture(scope="module")
def phantom_studies():
    return studies_from_phantom(3, seed=7, small=True)


def scanned(case_ids) -> qa.AcquisitionRange:
    """The span of the voxel spacings (largest in-plane, slice; mm) of ``phantom_studies``' cases
    ``case_ids``, from the phantom's scanner grids (drawn without rendering the CT)."""
    grids = [case_scene(7, int(case_id.rsplit("-", 1)[1]), small=True).grid for case_id in case_ids]
    assert all(np.array_equal(g.direction, np.eye(3)) for g in grids)  # slices along z
    return qa.AcquisitionRange.spanning((max(g.spacing[:2]), g.spacing[2]) for g in grids)


@pytest.fixture(scope="module")
def eyes(phantom_studies, tmp_path_factory):
    return prepare(phantom_studies, SPEC, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def soft_eyes(phantom_studies, tmp_path_factory):
    return prepare(phantom_studies, SOFT_SPEC, tmp_path_factory.mktemp("soft-cache"))


def test_prepared_eyes_hold_every_structure(eyes):
    assert len(eyes) == 6 and {e.side for e in eyes} == {"right", "left"}
    for eye in eyes:
        assert eye.image.dtype == np.float16 and eye.classes.dtype == np.uint8
        assert eye.image.shape == eye.classes.shape and all(n % 16 == 0 for n in eye.image.shape[1:])
        assert 0.0 <= float(eye.image.min()) and float(eye.image.max()) <= 1.0
        assert set(np.unique(eye.classes)) == set(range(structures.NUM_CLASSES))


def test_cache_is_reused(phantom_studies, tmp_path):
    first = prepare(phantom_studies[:1], SPEC, tmp_path)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1
    broken = [type(s)(s.case_id, lambda: (_ for _ in ()).throw(AssertionError("reloaded")), s.source_key)
              for s in phantom_studies[:1]]
    second = prepare(broken, SPEC, tmp_path)
    np.testing.assert_array_equal(first[0].classes, second[0].classes)
    assert second[0].spacing_mm == first[0].spacing_mm
    assert qa.AcquisitionRange.spanning([second[0].spacing_mm]) == scanned([phantom_studies[0].case_id])


def test_preparing_in_two_processes_gives_the_same_eyes_in_order(phantom_studies, eyes, tmp_path, caplog):
    missing = Study("broken", partial(_read_pair, tmp_path / "none.nii.gz", tmp_path / "none.seg.nrrd"), "broken")
    with caplog.at_level(logging.WARNING):
        parallel = prepare(phantom_studies + [missing], SPEC, tmp_path / "cache", workers=2)
    assert "skipping study broken" in caplog.text
    assert [(e.case_id, e.side) for e in parallel] == [(e.case_id, e.side) for e in eyes]
    for mine, theirs in zip(parallel, eyes):
        np.testing.assert_array_equal(mine.image, theirs.image)
        np.testing.assert_array_equal(mine.classes, theirs.classes)
        np.testing.assert_array_equal(mine.annotated, theirs.annotated)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == len(phantom_studies)
    with pytest.raises(OrbitSegError, match="workers must be at least 1"):
        TrainConfig(out_dir=str(tmp_path), prepare_workers=0).resolved()


def test_a_cache_that_cannot_be_written_or_read_costs_only_the_cache(phantom_studies, eyes, tmp_path, caplog,
                                                                      monkeypatch):
    cache = tmp_path / "cache"

    def full_disk(file, **arrays):
        Path(file).write_bytes(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(np, "savez", full_disk)
        written = prepare(phantom_studies[:1], SPEC, cache)
    assert "could not be cached" in caplog.text and "No space left on device" in caplog.text
    assert [(e.case_id, e.side) for e in written] == [(e.case_id, e.side) for e in eyes[:2]]
    assert not list(cache.iterdir())  # the partly written file is gone
    prepare(phantom_studies[:1], SPEC, cache)
    (cached,) = cache.glob("*.npz")
    cached.write_bytes(b"not a zip file")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = prepare(phantom_studies[:1], SPEC, cache)
    assert "cannot be read" in caplog.text
    for mine, theirs in zip(again, eyes[:2]):
        np.testing.assert_array_equal(mine.image, theirs.image)
    with np.load(cached) as data:  # prepared again and rewritten
        assert {"image_right", "image_left"} <= set(data.files)


def test_augmented_batches_have_network_shapes(eyes):
    rng = np.random.default_rng(0)
    pipeline = augmentation(0)
    patches = [augmented_patch(TensorEye.of(e), 16, (64, 48), rng, pipeline) for e in eyes[:2]]
    images, classes = sv_net_batch(patches)
    assert images.shape == (2, 1, 16, 64, 48) and classes.shape == (2, 16, 64, 48)
    assert set(torch.unique(classes).tolist()) <= set(range(structures.NUM_CLASSES))
    images, classes = seq_unet_batch([augmented_patch(TensorEye.of(e), 8, (64, 48), rng, None) for e in eyes[:2]])
    assert images.shape == (12, 3, 1, 64, 48) and classes.shape == (12, 64, 48)


def test_patches_are_the_arrays_windows_and_the_grid_made_once_changes_nothing(soft_eyes):
    """A patch is a window of the eye's arrays (cut from tensors viewing them); the augmentation with its
    sampling grid made once per patch size gives the patches of the one that makes it per patch."""
    eye = soft_eyes[0]
    tensors = TensorEye.of(eye)
    assert tensors.image.data_ptr() == eye.image.__array_interface__["data"][0]  # a view, not a copy
    d, h, w = (n // 2 for n in eye.image.shape)  # a window smaller than the eye along every axis
    image, fractions = sample_patch(tensors, d, (h, w), np.random.default_rng(3))
    rng = np.random.default_rng(3)
    z, y, x = (int(rng.integers(0, n - size + 1)) for n, size in zip(eye.image.shape, (d, h, w)))
    np.testing.assert_array_equal(image.numpy(), eye.image[z:z + d, y:y + h, x:x + w].astype(np.float32))
    np.testing.assert_allclose(fractions.numpy(), eye.fractions[:, z:z + d, y:y + h, x:x + w] / np.float32(255))
    padded = fit_inplane(torch.ones(2, 3, 5), (5, 3), 0.0)
    assert padded.shape == (2, 5, 3) and padded[:, 1:4, 1].all() and not padded[:, 0].any() and not padded[:, 4].any()
    per_patch, once = augmentation(5, True), augmentation(5, True, (d, h, w), "cpu")
    for _ in range(3):
        a = augmented_patch(tensors, d, (h, w), np.random.default_rng(4), per_patch)
        b = augmented_patch(tensors, d, (h, w), np.random.default_rng(4), once)
        for mine, theirs in zip(a, b):
            torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("architecture, config, loss, drop, soft", [
    ("sv-net", TINY_SV, "paper", 0.10, False), ("sv-net", TINY_SV, "dice_ce", 0.10, False),
    ("seq-unet", TINY_SEQ, "paper", 0.02, False), ("sv-net", TINY_SV, "dice_ce", 0.10, True),
    ("seq-unet", TINY_SEQ, "dice_ce", 0.02, True)])
def test_a_few_steps_reduce_the_loss(request, architecture, config, loss, drop, soft):
    """12 Adam steps on one batch lower the loss (Dice starts slowly from sigmoid(0) = 0.5 everywhere),
    on class targets and on partial-volume targets."""
    eyes = request.getfixturevalue("soft_eyes" if soft else "eyes")
    torch.manual_seed(0)
    model = models.create(architecture, **config)
    loss_fn = SegmentationLoss(loss, architecture, structures.NUM_CLASSES, model.head != "sigmoid_nobg")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3 if architecture == "sv-net" else 1e-2)
    rng = np.random.default_rng(0)
    if architecture == "sv-net":
        batch = sv_net_batch([augmented_patch(TensorEye.of(e), 16, (64, 48), rng, None) for e in eyes[:2]])
    else:
        batch = seq_unet_batch([augmented_patch(TensorEye.of(e), 5, (64, 48), rng, None) for e in eyes[:2]])
    values = []
    for _ in range(12):
        loss_value = loss_fn(model(batch[0]), batch[1])
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
        values.append(loss_value.item())
    assert values[-1] < values[0] - drop, values
    assert np.mean(np.diff(values) < 0) > 0.7, values


def test_soft_targets_are_partial_volumes_that_agree_with_the_classes(phantom_studies, eyes, soft_eyes, tmp_path):
    for hard, soft in zip(eyes, soft_eyes):
        np.testing.assert_array_equal(hard.classes, soft.classes)
        np.testing.assert_array_equal(hard.image, soft.image)
        assert hard.fractions is None and hard.targets is hard.classes and soft.targets is soft.fractions
        assert soft.fractions.dtype == np.uint8 and soft.fractions.shape == (6,) + soft.classes.shape
        assert int(soft.fractions.astype(int).sum(axis=0).max()) <= 255 + 3  # the structures do not overlap
        assert np.any((soft.fractions > 0) & (soft.fractions < 255))  # boundaries are partial
        for s in structures.STRUCTURES:
            inside, fraction = soft.classes == s.class_index, soft.fractions[s.class_index - 1]
            assert abs(float(fraction.sum()) / 255 - inside.sum()) < 0.15 * inside.sum(), s.key
            assert np.mean(fraction[inside] >= 128) > 0.8 and np.mean(fraction[~inside] < 128) > 0.99, s.key
    # soft and hard volumes are cached side by side; the soft ones come back with their fractions
    prepare(phantom_studies[:1], SPEC, tmp_path)
    prepare(phantom_studies[:1], SOFT_SPEC, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    broken = [type(s)(s.case_id, lambda: (_ for _ in ()).throw(AssertionError("reloaded")), s.source_key)
              for s in phantom_studies[:1]]
    again = prepare(broken, SOFT_SPEC, tmp_path)
    np.testing.assert_array_equal(again[0].fractions, soft_eyes[0].fractions)
    assert prepare(broken, SPEC, tmp_path)[0].fractions is None


def test_soft_patches_and_batches(soft_eyes):
    rng = np.random.default_rng(0)
    patches = [augmented_patch(TensorEye.of(e), 16, (64, 48), rng, augmentation(0, soft_targets=True)) for e in soft_eyes[:2]]
    images, targets = sv_net_batch(patches)
    assert images.shape == (2, 1, 16, 64, 48) and targets.shape == (2, 6, 16, 64, 48)
    assert targets.dtype == torch.float32 and 0.0 <= float(targets.min()) and float(targets.max()) <= 1.0
    assert bool(((targets > 0.05) & (targets < 0.95)).any())
    images, targets = seq_unet_batch([augmented_patch(TensorEye.of(e), 8, (64, 48), rng, None) for e in soft_eyes[:2]])
    assert images.shape == (12, 3, 1, 64, 48) and targets.shape == (12, 6, 64, 48)
    eye = soft_eyes[0]
    depth = eye.image.shape[0] + 6  # deeper than the eye: padded with empty targets above and below
    image, fractions = sample_patch(TensorEye.of(eye), depth, eye.image.shape[1:], rng)
    assert image.shape == (depth,) + eye.image.shape[1:] and fractions.shape == (6, depth) + eye.image.shape[1:]
    assert not fractions[:, :3].any() and not fractions[:, -3:].any()
    np.testing.assert_allclose(fractions[:, 3:-3].numpy(), eye.fractions / np.float32(255))


@pytest.mark.parametrize("architecture, kind", [("sv-net", "dice_ce"), ("sv-net", "bce"), ("seq-unet", "dice_ce")])
def test_loss_on_fractions(architecture, kind):
    """One-hot fractions give exactly the loss of their classes; the background's target is what the
    structures leave."""
    torch.manual_seed(0)
    background = architecture == "sv-net"
    classes = torch.randint(0, structures.NUM_CLASSES, (2, 4, 8, 8))
    logits = torch.randn(2, structures.NUM_CLASSES - (0 if background else 1), 4, 8, 8)
    loss_fn = SegmentationLoss(kind, architecture, structures.NUM_CLASSES, background)
    fractions = one_hot(classes, structures.NUM_CLASSES)[:, 1:]
    torch.testing.assert_close(loss_fn(logits, fractions), loss_fn(logits, classes))
    partial = torch.zeros(2, 6, 4, 8, 8)
    partial[:, 1] = 0.3
    target = torch.cat([torch.full((2, 1, 4, 8, 8), 0.7), partial], dim=1)[:, (0 if background else 1):]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    if kind == "bce":
        torch.testing.assert_close(loss_fn(logits, partial), expected)
    else:
        assert float(loss_fn(logits, partial)) > float(expected)  # plus the Dice term


@pytest.mark.parametrize("architecture, kind", [("sv-net", "dice_ce"), ("seq-unet", "dice")])
def test_structure_weights_weight_each_channels_terms(architecture, kind):
    """Equal weights give the plain loss; a weight multiplies its channel's cross-entropy and Dice terms,
    with the weights normalised to mean 1."""
    torch.manual_seed(1)
    background = architecture == "sv-net"
    channels = structures.NUM_CLASSES - (0 if background else 1)
    classes = torch.randint(0, structures.NUM_CLASSES, (2, 4, 8, 8))
    logits = torch.randn(2, channels, 4, 8, 8)
    plain = SegmentationLoss(kind, architecture, structures.NUM_CLASSES, background)
    same = SegmentationLoss(kind, architecture, structures.NUM_CLASSES, background, class_weights=[2.0] * 7)
    torch.testing.assert_close(same(logits, classes), plain(logits, classes))
    weights = [1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0]  # superior rectus ×3
    weighted = SegmentationLoss(kind, architecture, structures.NUM_CLASSES, background, class_weights=weights)
    target = one_hot(classes, structures.NUM_CLASSES)[:, (0 if background else 1):]
    w = torch.tensor(weights[(0 if background else 1):])
    w = w / w.mean()
    bce = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(logits[:, c], target[:, c])
                       for c in range(channels)])
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum(dim=(0, 2, 3, 4))
    dice = 1 - (2 * overlap + 1e-4) / (probability.sum(dim=(0, 2, 3, 4)) + target.sum(dim=(0, 2, 3, 4)) + 1e-4)
    expected = (dice * w).mean() + ((bce * w).mean() if kind == "dice_ce" else 0)
    torch.testing.assert_close(weighted(logits, classes), expected)
    with pytest.raises(OrbitSegError, match="positive"):
        SegmentationLoss(kind, architecture, structures.NUM_CLASSES, background, class_weights=[1, 0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("architecture, kind", [("sv-net", "dice_ce"), ("seq-unet", "dice"), ("sv-net", "bce")])
def test_unannotated_structures_are_left_out_of_the_loss(architecture, kind):
    """A sample's unannotated channels (and its background, when it lacks a structure) leave both terms:
    each channel's terms are computed over the samples that annotate it; a channel no sample annotates
    drops out of the mean; those channels get no gradient."""
    torch.manual_seed(2)
    background = architecture == "sv-net"
    first = 0 if background else 1
    classes = torch.randint(0, structures.NUM_CLASSES, (2, 4, 8, 8))
    logits = torch.randn(2, structures.NUM_CLASSES - first, 4, 8, 8, requires_grad=True)
    target = one_hot(classes, structures.NUM_CLASSES)[:, first:]
    loss_fn = SegmentationLoss(kind, architecture, structures.NUM_CLASSES, background)
    torch.testing.assert_close(loss_fn(logits, classes, known_channels(torch.ones(2, 6))), loss_fn(logits, classes))

    def expected(known: torch.Tensor) -> torch.Tensor:
        terms = []
        for c in range(logits.shape[1]):
            samples = known[:, c + first].nonzero().flatten()
            if len(samples) == 0:
                continue
            lc, tc = logits[samples, c], target[samples, c]
            p = torch.sigmoid(lc)
            dice = 1 - (2 * (p * tc).sum() + 1e-4) / (p.sum() + tc.sum() + 1e-4)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(lc, tc)
            terms.append({"bce": bce, "dice": dice, "dice_ce": bce + dice}[kind])
        return torch.stack(terms).mean()

    annotated = torch.ones(2, 6, dtype=torch.bool)
    annotated[1, 5] = False  # the second sample's reference has no optic nerve
    known = known_channels(annotated)
    assert known[1].tolist() == [False, True, True, True, True, True, False] and known[0].all()
    loss = loss_fn(logits, classes, known)
    torch.testing.assert_close(loss, expected(known))
    loss.backward()
    unknown = [c - first for c in (0, 6) if c >= first]  # the background (SV-Net) and the optic nerve
    assert not logits.grad[1, unknown].any() and logits.grad[0, unknown].abs().sum() > 0
    assert logits.grad[1, [c for c in range(logits.shape[1]) if c not in unknown]].abs().min(dim=0).values.sum() > 0
    annotated[0, 5] = False  # no sample has it: the channel drops out of the mean
    torch.testing.assert_close(loss_fn(logits, classes, known_channels(annotated)), expected(known_channels(annotated)))


def _list_without(folder, left_out: str) -> Path:
    """A study list of two small phantom cases in ``folder`` whose reference labelmaps lack the
    ``left_out`` structure of both eyes."""
    write_dataset(folder, 2, seed=7, small=True)
    rows = ["id,image,reference"]
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        labels = sitk.ReadImage(str(case / "labels.nii.gz"))
        array = sitk.GetArrayFromImage(labels)
        for side in structures.SIDES:
            array[array == structures.label_value(side, left_out)] = 0
        partial = sitk.GetImageFromArray(array)
        partial.CopyInformation(labels)
        sitk.WriteImage(partial, str(case / "partial.nii.gz"))
        rows.append(f"{case.name},{case.name}/ct.nii.gz,{case.name}/partial.nii.gz")
    (folder / "partial.csv").write_text("\n".join(rows) + "\n")
    return folder / "partial.csv"


@pytest.fixture(scope="module")
def nerveless_list(tmp_path_factory):
    """A study list of two small phantom cases whose reference labelmaps lack both optic nerves."""
    return _list_without(tmp_path_factory.mktemp("nerveless"), "optic_nerve")


def test_eyes_whose_reference_lacks_the_globe_are_placed_by_detection(tmp_path):
    """Muscles and nerves corrected without the globe: each eye is still prepared, around the globe that
    detection finds, with every muscle and the nerve inside it, and the globe left out of the loss."""
    eyes = prepare(studies_from_list(_list_without(tmp_path, "globe")), SPEC)
    assert [e.side for e in eyes] == ["right", "left"] * 2
    for eye in eyes:
        assert eye.annotated.tolist() == [False] + [True] * 5
        assert set(np.unique(eye.targets).tolist()) == {0, 2, 3, 4, 5, 6}


def test_references_without_a_structure_are_prepared_with_what_they_annotate(nerveless_list, phantom_studies,
                                                                             tmp_path, caplog):
    """Eyes record what their reference annotates, kept in the cache; an older cache file without it,
    or without the study's spacings, is prepared again; training warns about partly annotated structures."""
    eyes = prepare(studies_from_list(nerveless_list), SPEC, tmp_path / "cache")
    assert len(eyes) == 4 and all(e.annotated.tolist() == [True] * 5 + [False] for e in eyes)
    complete = prepare(phantom_studies[:1], SPEC)
    assert all(e.annotated.all() for e in complete)
    with caplog.at_level(logging.WARNING):
        training_loop._report_annotations(eyes + complete)
    assert "the optic nerve is annotated in 2 of 6 eyes" in caplog.text and "rectus" not in caplog.text
    loads = []
    counted = [type(s)(s.case_id, lambda s=s: loads.append(s.case_id) or s.load(), s.source_key)
               for s in studies_from_list(nerveless_list)]
    again = prepare(counted, SPEC, tmp_path / "cache")
    assert not loads and [e.annotated.tolist() for e in again] == [e.annotated.tolist() for e in eyes]
    first = sorted((tmp_path / "cache").glob("*.npz"))[0]
    with np.load(first) as data:
        older = {k: data[k] for k in data.files if not k.startswith("annotated")}
    np.savez(first, **older)
    prepare(counted, SPEC, tmp_path / "cache")
    assert len(loads) == 1
    with np.load(first) as data:
        assert {"spacing_mm_right", "spacing_mm_left"} <= set(data.files)  # rewritten in the current form
        older = {k: data[k] for k in data.files if not k.startswith("spacing_mm")}
    np.savez(first, **older)
    again = prepare(counted, SPEC, tmp_path / "cache")
    assert len(loads) == 2 and [e.spacing_mm for e in again] == [e.spacing_mm for e in eyes]


@pytest.mark.parametrize("architecture, config, input_size, batch_size", [("sv-net", TINY_SV, (48, 64, 16), 2),
                                                                          ("seq-unet", TINY_SEQ, (48, 64, 3), 12)])
def test_fine_tuning_without_a_structure_keeps_its_output(nerveless_list, phantom_studies, tmp_path, caplog,
                                                          architecture, config, input_size, batch_size):
    """Fine-tuning on references without optic nerves leaves the nerve's output channel (and SV-Net's
    background channel) exactly as they were, trains the others, and says so."""
    nerve = structures.structure("optic_nerve").class_index
    kept = [0, nerve] if architecture == "sv-net" else [nerve - 1]
    base = dict(architecture=architecture, model_config=config, input_size=input_size, batch_size=batch_size)
    source = train(_config(tmp_path / "a", epochs=1, **base), phantom_studies).model_path
    with caplog.at_level(logging.WARNING):
        tuned = train(_config(tmp_path / "b", epochs=2, folds=1, init=str(source), **{**base, "model_config": {}}),
                      studies_from_list(nerveless_list)).model_path
    assert "no training reference annotates the optic nerve" in caplog.text
    start, _ = models.load_checkpoint(source)
    model, _ = models.load_checkpoint(tuned)
    for key in ("classifier.weight", "classifier.bias"):
        before, after = start.state_dict()[key], model.state_dict()[key]
        torch.testing.assert_close(after[kept], before[kept], rtol=0, atol=0)
        others = [c for c in range(len(before)) if c not in kept]
        assert not torch.allclose(after[others], before[others])


def test_fold_split_is_deterministic_and_disjoint():
    ids = [f"c{i}" for i in range(10)]
    folds = fold_split(ids, 4, seed=3)
    assert folds == fold_split(ids, 4, seed=3)
    assert sorted(sum(folds, [])) == sorted(ids) and len(folds) == 4
    assert fold_split(ids, 1, seed=3) == [[]]


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One prepared-data cache for this module's training runs (``_config``'s default). Prepared eyes are
    keyed by their study, grid and data seed, so a run that reads another run's eyes trains on what it
    would have prepared itself; the tests about the cache give their own folder."""
    global SHARED_CACHE
    SHARED_CACHE = tmp_path_factory.mktemp("prepared")
    return SHARED_CACHE


def _config(tmp_path, **changes):
    base = dict(out_dir=str(tmp_path / "run"), architecture="sv-net", model_config=TINY_SV, spacing=(1.0, 1.0, 2.0),
                input_size=(48, 64, 16), folds=3, fold=0, epochs=2, batch_size=2, lr=1e-3, seed=1,
                device="cpu", cache_dir=str(SHARED_CACHE), name="tiny")
    base.update(changes)
    return TrainConfig(**base)


def test_train_resume_and_checkpoint_card(phantom_studies, tmp_path):
    result = train(_config(tmp_path), phantom_studies, data_description="tiny phantom")
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "training_log.csv", encoding="utf-8")))
    assert [(r["fold"], r["epoch"]) for r in rows] == [("0", "1"), ("0", "2")]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    model, card = models.load_checkpoint(result.model_path)
    assert card.architecture == "sv-net" and card.spacing == [1.0, 1.0, 2.0] and card.input_size == [48, 64, 16]
    assert "tiny phantom" in card.training_data and "fold 0 of 3" in card.training_data
    assert "val_dice_per_structure" in card.metrics
    validation = fold_split([s.case_id for s in phantom_studies], 3, 1)[0]  # fold 0's (data seed 1)
    trained = scanned(s.case_id for s in phantom_studies if s.case_id not in validation)
    assert card.training_acquisition == trained.to_dict() and card.acquisition_range == trained
    assert trained.slice == (2.0, 2.0) and 0.75 <= trained.inplane[0] < trained.inplane[1] <= 0.85
    assert models.read_extra(run / "fold0" / "last.pt")["epoch"] == 2
    # resume: two more epochs continue from epoch 2
    train(_config(tmp_path, epochs=4), phantom_studies)
    rows = list(csv.DictReader(open(run / "training_log.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert models.read_extra(run / "fold0" / "last.pt")["epoch"] == 4


def test_training_on_partial_volume_targets(phantom_studies, tmp_path):
    result = train(_config(tmp_path, soft_targets=True, cache_dir=str(tmp_path / "cache")), phantom_studies,
                   data_description="tiny phantom")
    _, card = models.load_checkpoint(result.model_path)
    assert "partial-volume targets" in card.training_data
    rows = list(csv.DictReader(open(tmp_path / "run" / "training_log.csv", encoding="utf-8")))
    assert len(rows) == 2 and all(np.isfinite(float(r["train_loss"])) for r in rows)
    assert any(p.name.endswith(".npz") for p in (tmp_path / "cache").iterdir())
    _, hard = models.load_checkpoint(train(_config(tmp_path / "hard", epochs=1), phantom_studies).model_path)
    assert "nearest-label targets" in hard.training_data


def test_data_seed_keeps_the_cache_and_folds_while_the_seed_draws_other_patches(phantom_studies, tmp_path,
                                                                                monkeypatch):
    splits = []
    monkeypatch.setattr(training_loop, "fold_split", lambda *args: splits.append(args) or fold_split(*args))
    cache = tmp_path / "a" / "cache"
    first = train(_config(tmp_path / "a", epochs=1, cache_dir=str(cache)), phantom_studies)  # seed 1: data seed 1 too
    prepared = sorted(p.name for p in cache.iterdir())
    broken = [type(s)(s.case_id, lambda: (_ for _ in ()).throw(AssertionError("prepared again")), s.source_key)
              for s in phantom_studies]
    second = train(_config(tmp_path / "b", epochs=1, seed=5, data_seed=1, cache_dir=str(cache)), broken)
    assert sorted(p.name for p in cache.iterdir()) == prepared
    _, card_a = models.load_checkpoint(first.model_path)
    _, card_b = models.load_checkpoint(second.model_path)
    assert "seed 5 (data seed 1)" in card_b.training_data and "data seed" not in card_a.training_data
    assert len(splits) == 2 and splits[0] == splits[1]  # the same folds
    with pytest.raises(AssertionError, match="prepared again"):  # another data seed is other data
        train(_config(tmp_path / "c", epochs=1, seed=5, data_seed=2, cache_dir=str(cache)), broken)


def test_cancel_keeps_the_last_good_checkpoint(phantom_studies, tmp_path):
    train(_config(tmp_path, epochs=1), phantom_studies)
    last = tmp_path / "run" / "fold0" / "last.pt"
    before = last.read_bytes()
    calls = []
    with pytest.raises(CancelledError, match="last good checkpoint"):
        train(_config(tmp_path, epochs=3), phantom_studies, cancel=lambda: calls.append(1) or len(calls) > 1)
    assert last.read_bytes() == before
    assert models.read_extra(last)["epoch"] == 1


def test_fine_tuning_starts_from_the_given_model(phantom_studies, tmp_path):
    """``init``: every fold starts from that model's weights and configuration (``model_config`` is ignored),
    and its card's acquisition range is the hull of the starting model's and the training studies'.
    Here the start is a file whose card records no range (as older files): the bundled models' is its."""
    trained = train(_config(tmp_path / "a", epochs=1), phantom_studies).model_path
    start, trained_card = models.load_checkpoint(trained)
    source = tmp_path / "older.pt"
    models.save_checkpoint(source, start, dataclasses.replace(trained_card, training_acquisition=None))
    tuned = train(_config(tmp_path / "b", epochs=1, init=str(source), model_config={}, lr=1e-12),
                  phantom_studies).model_path
    model, card = models.load_checkpoint(tuned)
    assert card.config == start.config and card.config["widths"] == TINY_SV["widths"]
    assert f"fine-tuned from {source.name}" in card.training_data
    studies = trained_card.acquisition_range  # the same fold's training studies
    assert card.acquisition_range == qa.TRAINED_ACQUISITION.hull(studies)
    assert card.acquisition_range == qa.AcquisitionRange((0.25, studies.inplane[1]), (0.5, 3.0))
    fresh_run = train(_config(tmp_path / "c", epochs=1, lr=1e-12, seed=2), phantom_studies)
    fresh, _ = models.load_checkpoint(fresh_run.model_path)
    weights = [k for k, t in start.state_dict().items() if k.endswith("conv.weight") or t.ndim == 5]
    assert weights
    for key in weights:
        torch.testing.assert_close(model.state_dict()[key], start.state_dict()[key], atol=1e-3, rtol=0)
    assert any(not torch.allclose(fresh.state_dict()[k], start.state_dict()[k], atol=1e-3) for k in weights)
    with pytest.raises(OrbitSegError, match="it is a sv-net model"):
        train(_config(tmp_path / "d", architecture="seq-unet", init=str(trained), model_config={}), phantom_studies)
    assert not (tmp_path / "d").exists()  # a refused start leaves no empty output folder behind


def test_all_folds_saved_as_an_ensemble(phantom_studies, tmp_path):
    result = train(_config(tmp_path, folds=2, fold=None, epochs=1, ensemble=True, description="two folds"),
                   phantom_studies)
    run = tmp_path / "run"
    assert sorted(result.fold_scores) == [0, 1]
    ensemble, card = models.load_checkpoint(result.model_path)
    assert card.members == 2 and card.description == "two folds" and card.config["widths"] == TINY_SV["widths"]
    assert all(f"fold {f} of 2" in card.training_data for f in range(2))
    folds = [models.read_card(run / f"fold{f}" / "best.pt").acquisition_range for f in range(2)]
    assert folds[0] != folds[1] and card.acquisition_range == folds[0].hull(folds[1])
    assert card.acquisition_range == scanned(s.case_id for s in phantom_studies)  # every study trains a fold
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        folds = [models.load_checkpoint(run / f"fold{f}" / "best.pt")[0](x) for f in range(2)]
        mean = torch.stack([torch.sigmoid(f) for f in folds]).mean(0)
        torch.testing.assert_close(torch.sigmoid(ensemble(x)), mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(OrbitSegError, match="ensemble of 2 networks; start from one of the models"):
        train(_config(tmp_path / "b", epochs=1, init=str(result.model_path)), phantom_studies)
    with pytest.raises(OrbitSegError, match="ensemble of fold models needs all folds"):
        _config(tmp_path, ensemble=True).resolved()


def test_bad_training_settings(tmp_path, capsys):
    with pytest.raises(OrbitSegError, match="fold 5"):
        _config(tmp_path, fold=5).resolved()
    with pytest.raises(OrbitSegError, match="unknown model"):
        _config(tmp_path, architecture="unet").resolved()
    with pytest.raises(OrbitSegError, match="study list not found"):
        studies_from_list(tmp_path / "missing.csv")
    with pytest.raises(OrbitSegError, match="no structure named levator"):
        _config(tmp_path, structure_weights={"levator": 2.0}).resolved()
    with pytest.raises(OrbitSegError, match="must be positive"):
        _config(tmp_path, structure_weights={"optic_nerve": -1.0}).resolved()
    assert main(["train", "--phantom", "2", "--out", str(tmp_path / "x"), "--structure-weight", "superior_rectus"]) != 0
    assert "--structure-weight takes STRUCTURE=WEIGHT" in capsys.readouterr().err


def test_training_reads_study_lists_with_the_batch_reader(tmp_path):
    """The same list is checked as for batch mode: header names in any case, ids unique ignoring case."""
    for name in ("a.nii.gz", "a.seg.nrrd", "b.nii.gz", "b.seg.nrrd"):
        (tmp_path / name).write_bytes(b"")
    listed = tmp_path / "studies.csv"
    listed.write_text("ID,Image,Reference,group\nA,a.nii.gz,a.seg.nrrd,x\nB,b.nii.gz,b.seg.nrrd,y\n", encoding="utf-8")
    studies = studies_from_list(listed)
    assert [s.case_id for s in studies] == ["A", "B"] and str(tmp_path / "a.nii.gz") in studies[0].source_key
    listed.write_text("id,image,reference\nA,a.nii.gz,a.seg.nrrd\na,b.nii.gz,b.seg.nrrd\n", encoding="utf-8")
    with pytest.raises(StudyListError, match="duplicate id 'a'"):
        studies_from_list(listed)
    listed.write_text("id,image,reference\nA,a.nii.gz,a.seg.nrrd\nB,b.nii.gz,\n", encoding="utf-8")
    with pytest.raises(OrbitSegError, match="training needs a reference for every study .*none for B"):
        studies_from_list(listed)
    listed.write_text("id,image,reference\nA,a.nii.gz,gone.seg.nrrd\n", encoding="utf-8")
    with pytest.raises(OrbitSegError, match="study A: .*gone.seg.nrrd not found"):
        studies_from_list(listed)


def _train_command(tmp_path, cases: int, seed: int, *options: str) -> int:
    """``orbitseg train`` on a study list of small phantom cases written to ``tmp_path/data``, into ``tmp_path/run``."""
    from OrbitSegLib.phantom import write_dataset
    studies = write_dataset(tmp_path / "data", cases, seed=seed, small=True)
    return main(["train", "--studies", str(studies), "--out", str(tmp_path / "run"), "--spacing", "1", "1", "2",
                 "--device", "cpu", "--progress", "none", *options])


def test_train_command_on_a_phantom_study_list(tmp_path):
    code = _train_command(tmp_path, 3, 11, "--model", "seq-unet", "--input-size", "48", "64", "3", "--folds", "3",
                          "--fold", "1", "--epochs", "1", "--batch-size", "6", "--name", "tiny-seq")
    assert code == 0
    _, card = models.load_checkpoint(tmp_path / "run" / "tiny-seq.pt")
    assert card.architecture == "seq-unet" and "study list" in card.training_data


def test_training_without_validation_keeps_the_lowest_training_loss(tmp_path, capsys):
    code = _train_command(tmp_path, 2, 12, "--model", "sv-net", "--input-size", "48", "64", "16", "--folds", "1",
                          "--epochs", "2", "--batch-size", "2", "--samples-per-epoch", "2", "--name", "all-data",
                          "--structure-weight", "superior_rectus=2", "--structure-weight", "optic_nerve=1.5")
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "training_log.csv", encoding="utf-8")))
    losses = [float(r["train_loss"]) for r in rows]
    _, card = models.load_checkpoint(tmp_path / "run" / "all-data.pt")
    assert "val_dice" not in card.metrics and card.metrics["train_loss"] == pytest.approx(min(losses))
    assert card.metrics["epoch"] == 1 + losses.index(min(losses)) and "0 validation studies" in card.training_data
    assert "loss paper optic_nerve ×1.5 superior_rectus ×2," in card.training_data
    assert f"no validation: the epoch with the lowest training loss, {min(losses):.4f}" in capsys.readouterr().out

