"""SEQ-UNET, SV-Net, the model registry and the checkpoint format (small configs, CPU)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from OrbitSegLib import models
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.models import BiConvLSTM, ConvLSTMCell, SeqUNet, SVNet
from OrbitSegLib.structures import NUM_CLASSES, STRUCTURE_KEYS

SV_NET_PAPER_WEIGHTS = 8_664_471
SEQ_UNET_PAPER_WEIGHTS = 57_003_078
TINY_SEQ_UNET = {"widths": [4, 8, 16], "lstm1_hidden": 8, "lstm1_layers": 2, "lstm2_hidden": 4, "lstm2_layers": 2}
TINY_SV_NET = {"widths": [4, 8, 16], "encoder_convs": [1, 2, 2], "decoder_convs": [2, 2]}


def n_weights(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- SV-Net -----------------------------------------------------------------------------------------

def test_sv_net_paper_config_has_17_kernel3_convolutions_and_8_6m_weights():
    model = models.create("sv-net", "paper")
    assert model.config == SVNet.paper_config() == SVNet().config
    assert n_weights(model) == SV_NET_PAPER_WEIGHTS
    assert abs(n_weights(model) - 8.6e6) / 8.6e6 < 0.05
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert sum(c.kernel_size == (3, 3, 3) for c in convs) == 17
    assert [c.kernel_size for c in convs if c.kernel_size != (3, 3, 3)] == [(1, 1, 1)]
    assert convs[-1] is model.classifier and model.classifier.out_channels == NUM_CLASSES == 7
    # every kernel-3 convolution and every up-convolution is followed by its own BatchNorm
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert len(ups) == 4 and all(u.kernel_size == (2, 2, 2) and u.stride == (2, 2, 2) for u in ups)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) == 17 + 4
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    assert len(pools) == 1 and pools[0].kernel_size == 2 and pools[0].stride == 2
    assert model.size_multiple == 16 and model.head == "sigmoid"


def test_sv_net_paper_config_runs_on_a_paper_shaped_crop():
    model = models.create("sv-net", "paper").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 7, 32, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("shape", [(1, 1, 16, 16, 16), (2, 1, 32, 48, 16), (1, 1, 48, 112, 96)])
def test_sv_net_default_output_shapes(shape):
    model = models.create("sv-net").eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], NUM_CLASSES, *shape[2:])
    assert torch.isfinite(out).all()


def test_sv_net_configurable_depth_widths_and_channels():
    model = models.create("sv-net", **TINY_SV_NET, in_channels=2, out_channels=3).eval()
    assert model.size_multiple == 4
    assert sum(isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3) for m in model.modules()) == 9
    with torch.no_grad():
        assert model(torch.randn(2, 2, 4, 8, 12)).shape == (2, 3, 4, 8, 12)


def test_sv_net_residuals_change_the_function_not_the_weights():
    plain = models.create("sv-net", **TINY_SV_NET, residual=False).eval()
    residual = models.create("sv-net", **TINY_SV_NET, residual=True).eval()
    assert n_weights(plain) == n_weights(residual)
    residual.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(plain(x), residual(x))


def test_sv_net_rejects_bad_inputs_and_configs():
    model = models.create("sv-net", **TINY_SV_NET)
    with pytest.raises(OrbitSegError, match="multiples of 4"):
        model(torch.randn(1, 1, 6, 8, 8))
    with pytest.raises(OrbitSegError, match=r"\(B, 1, D, H, W\)"):
        model(torch.randn(1, 8, 8, 8))
    with pytest.raises(OrbitSegError, match="decoder_convs"):
        models.create("sv-net", widths=[8, 16, 32])


# --- SEQ-UNET and ConvLSTM --------------------------------------------------------------------------

def test_seq_unet_paper_config_weights_and_64x64_forward():
    model = models.create("seq-unet", "paper").eval()
    assert model.config == SeqUNet.paper_config() == SeqUNet().config
    assert n_weights(model) == SEQ_UNET_PAPER_WEIGHTS
    assert isinstance(model.lstm1, BiConvLSTM) and len(model.lstm1.forward_cells) == 3
    assert model.lstm1.forward_cells[0].hidden_channels == 512
    assert model.lstm2.forward_cells[2].hidden_channels == 64
    encoder_convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in encoder_convs] == [64, 64, 128, 128, 256, 256]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 1, 64, 64))
    assert out.shape == (1, 6, 64, 64) and torch.isfinite(out).all()
    assert model.head == "sigmoid_nobg"


@pytest.mark.parametrize("shape", [(1, 3, 1, 8, 8), (2, 3, 1, 24, 40), (3, 3, 1, 112, 96)])
def test_seq_unet_default_output_shapes(shape):
    model = models.create("seq-unet").eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], len(STRUCTURE_KEYS), *shape[3:])


def test_seq_unet_uses_the_neighbour_slices():
    model = models.create("seq-unet", **TINY_SEQ_UNET).eval()
    x = torch.randn(1, 3, 1, 16, 16)
    changed = x.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(changed))


def test_tied_directions_make_the_output_symmetric_in_slice_order():
    x = torch.randn(2, 3, 1, 16, 16)
    tied = models.create("seq-unet", **TINY_SEQ_UNET).eval()
    untied = models.create("seq-unet", **TINY_SEQ_UNET, tied_directions=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(tied(x), tied(x.flip(1)), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(untied(x), untied(x.flip(1)), atol=1e-4)
    lstm_weights = n_weights(tied.lstm1) + n_weights(tied.lstm2)
    assert n_weights(untied) - n_weights(tied) == lstm_weights


def test_seq_unet_rejects_bad_inputs():
    model = models.create("seq-unet", **TINY_SEQ_UNET)
    with pytest.raises(OrbitSegError, match="multiples of 8"):
        model(torch.randn(1, 3, 1, 12, 16))
    with pytest.raises(OrbitSegError, match=r"\(B, 3, 1, H, W\)"):
        model(torch.randn(1, 1, 16, 16))


def test_convlstm_cell_step_matches_the_lstm_equations():
    cell = ConvLSTMCell(2, 3, kernel_size=3)
    x, h, c = torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    gates = nn.functional.conv2d(torch.cat((x, h), 1), cell.gates.weight, cell.gates.bias, padding=1)
    i, f, o, g = gates[:, 0:3], gates[:, 3:6], gates[:, 6:9], gates[:, 9:12]
    c_expected = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_expected = torch.sigmoid(o) * torch.tanh(c_expected)
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(c_new, c_expected)
    torch.testing.assert_close(h_new, h_expected)


def test_convlstm_first_step_equals_a_step_from_zero_state():
    cell = ConvLSTMCell(2, 3, kernel_size=3)
    x = torch.randn(2, 2, 5, 5)
    zero = torch.zeros(2, 3, 5, 5)
    for got, expected in zip(cell.first_step(x), cell(x, (zero, zero))):
        torch.testing.assert_close(got, expected)


def test_biconvlstm_sums_a_forward_and_a_backward_pass():
    lstm = BiConvLSTM(2, 3, num_layers=1, tied_directions=False)
    seq = torch.randn(2, 4, 2, 6, 6)
    expected = lstm.forward_cells[0].run(seq) + lstm.backward_cells[0].run(seq.flip(1)).flip(1)
    torch.testing.assert_close(lstm(seq), expected)
    assert lstm(seq).shape == (2, 4, 3, 6, 6)


# --- registry -----------------------------------------------------------------------------------------

def test_registry_names_presets_and_errors():
    assert models.NAMES == ("seq-unet", "sv-net")
    assert isinstance(models.create("sv-net"), SVNet) and isinstance(models.create("seq-unet"), SeqUNet)
    assert models.create("sv-net").config == models.preset_config("sv-net", "default")
    assert models.create("sv-net", out_channels=3).classifier.out_channels == 3
    with pytest.raises(OrbitSegError, match="unknown model 'unet'.*seq-unet, sv-net"):
        models.create("unet")
    with pytest.raises(OrbitSegError, match="unknown preset 'huge'"):
        models.create("sv-net", "huge")
    with pytest.raises(OrbitSegError, match="unknown sv-net configuration key.*base_widht"):
        models.create("sv-net", base_widht=8)


# --- checkpoints ---------------------------------------------------------------------------------------

def _trained_like(name: str, config: dict, shape) -> nn.Module:
    """A model whose BatchNorm statistics moved away from their initial values."""
    model = models.create(name, **config)
    model.train()
    with torch.no_grad():
        model(torch.randn(shape) * 3 + 1)
    return model.eval()


def _card(model, **kw):
    return models.make_card(model, window=(48, 400), spacing=(0.5, 0.4, 0.5), input_size=(24, 16, 3),
                            training_data="unit test", metrics={"dice": {"globe": 0.9}, "mean_iou": 0.81}, **kw)


@pytest.mark.parametrize("name, config, shape", [
    ("sv-net", TINY_SV_NET, (1, 1, 8, 8, 12)),
    ("seq-unet", TINY_SEQ_UNET, (2, 3, 1, 16, 24)),
])
def test_checkpoint_round_trip_with_card(tmp_path, name, config, shape):
    model = _trained_like(name, config, shape)
    path = tmp_path / f"{name}.pt"
    stored = models.save_checkpoint(path, model, _card(model), extra={"epoch": 7, "loss": [0.5, 0.25]})
    assert len(stored.checksum) == 64 and stored.software["torch"] == torch.__version__

    loaded, card = models.load_checkpoint(path)
    assert card == stored and card == models.read_card(path)
    assert card.architecture == name and card.window == [48, 400] and card.metrics["dice"] == {"globe": 0.9}
    assert card.patch_depth == 3 and card.inplane_size is None and card.size_multiple == model.size_multiple
    assert card.summary().startswith(f"{name}; 0.5×0.4×0.5 mm grid, patch 24×16×3; window 48/400 HU; created 20")
    assert card.summary().endswith("; mean_iou 0.81")
    expected_labels = (["background"] if model.head == "sigmoid" else []) + list(STRUCTURE_KEYS)
    assert card.labels == expected_labels and card.structures == list(STRUCTURE_KEYS)
    assert not loaded.training and type(loaded) is type(model)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert models.read_extra(path) == {"epoch": 7, "loss": [0.5, 0.25]}
    assert torch.load(path, weights_only=True)["card"]["architecture"] == name


def test_checkpoint_float16_storage_is_smaller_and_close(tmp_path):
    model = _trained_like("sv-net", TINY_SV_NET, (1, 1, 8, 8, 8))
    models.save_checkpoint(tmp_path / "full.pt", model, _card(model))
    models.save_checkpoint(tmp_path / "half.pt", model, _card(model), half=True)
    assert (tmp_path / "half.pt").stat().st_size < 0.75 * (tmp_path / "full.pt").stat().st_size
    loaded, _ = models.load_checkpoint(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        reference, half = model(x), loaded(x)
    assert not torch.equal(reference, half)
    torch.testing.assert_close(half, reference, rtol=1e-2, atol=1e-2 * reference.abs().max().item())


def test_float16_overflow_is_refused(tmp_path):
    model = models.create("sv-net", **TINY_SV_NET)
    with torch.no_grad():
        model.classifier.bias[0] = 1e6
    with pytest.raises(OrbitSegError, match="classifier.bias does not fit float16"):
        models.save_checkpoint(tmp_path / "x.pt", model, _card(model), half=True)


@pytest.fixture
def saved(tmp_path):
    model = models.create("sv-net", **TINY_SV_NET)
    path = tmp_path / "model.pt"
    models.save_checkpoint(path, model, _card(model))
    return path


def _rewrite(path, change):
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)


def test_record_metrics_adds_held_out_numbers_and_keeps_the_weights(tmp_path):
    model = _trained_like("sv-net", TINY_SV_NET, (1, 1, 8, 8, 8))
    path = tmp_path / "half.pt"
    stored = models.save_checkpoint(path, model, _card(model), half=True, extra={"epoch": 3})
    before = torch.load(path, weights_only=True)["state_dict"]
    held_out = {"data": "24 phantom cases, seed 999", "tao_mean_iou": 0.8, "globe_iou": 0.95,
                "muscle_dice": 0.89, "optic_nerve_dice": 0.91}
    updated = models.record_metrics(path, "held_out", held_out)
    assert updated.metrics == {**stored.metrics, "held_out": held_out} and updated.checksum == stored.checksum
    loaded, card = models.load_checkpoint(path)
    assert card == updated and models.read_extra(path) == {"epoch": 3}
    after = torch.load(path, weights_only=True)["state_dict"]
    assert all(after[k].dtype == torch.float16 and torch.equal(after[k], before[k])
               for k in before if before[k].is_floating_point())
    assert card.summary().endswith("held-out (24 phantom cases, seed 999): TAO mean IoU 0.800, globe IoU 0.950, "
                                   "muscle Dice 0.890, optic nerve Dice 0.910")
    # references without globes: evaluate records None for what it had nothing to measure on
    models.record_metrics(path, "held_out", {**held_out, "globe_iou": None})
    assert "TAO mean IoU 0.800, globe IoU –, muscle Dice 0.890" in models.read_card(path).summary()


def test_corrupted_weights_fail_the_checksum(saved):
    _rewrite(saved, lambda d: d["state_dict"]["classifier.weight"].add_(1e-3))
    with pytest.raises(OrbitSegError, match=f"{saved}: checksum mismatch"):
        models.load_checkpoint(saved)


def test_missing_card_and_foreign_files_are_errors(saved, tmp_path):
    _rewrite(saved, lambda d: d.pop("card"))
    with pytest.raises(OrbitSegError, match="has no model card"):
        models.load_checkpoint(saved)
    with pytest.raises(OrbitSegError, match="has no model card"):
        models.read_card(saved)
    plain = tmp_path / "plain.pt"
    torch.save(models.create("sv-net", **TINY_SV_NET).state_dict(), plain)
    with pytest.raises(OrbitSegError, match="plain.pt is not an OrbitSeg checkpoint"):
        models.load_checkpoint(plain)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(OrbitSegError, match="garbage.pt is not a readable OrbitSeg checkpoint"):
        models.load_checkpoint(garbage)
    with pytest.raises(OrbitSegError, match="missing.pt does not exist"):
        models.load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("change, message", [
    (lambda c: c["config"].update(widths=[4, 8, 32]), "configuration does not fit the weights"),
    (lambda c: c["config"].update(encoder_convs=[1, 2, 3]), "configuration does not fit the weights"),
    (lambda c: c["config"].update(depth=3), "sv-net configuration keys .*depth"),
    (lambda c: c["config"].pop("residual"), "sv-net configuration keys"),
    (lambda c: c["config"].update(out_channels=6), "out_channels does not match the 7 labels"),
    (lambda c: c.update(input_size=[10, 16, 16]), "in-plane is not a multiple of 4"),
    (lambda c: c.update(labels=c["labels"][::-1]), "label order .* is not OrbitSeg's"),
    (lambda c: c.update(architecture="unet"), "unknown architecture 'unet'"),
    (lambda c: c.update(head="softmax"), "head 'softmax' does not match sv-net"),
    (lambda c: c.update(format_version=99), "unknown checkpoint format version 99"),
    (lambda c: c.pop("window"), "invalid model card .*missing fields \\['window'\\]"),
    (lambda c: c.update(spacing=[0.5, 0.5]), "spacing"),
    (lambda c: c.update(window=[48, "400"]), "not numbers"),
])
def test_mismatched_cards_are_errors_naming_the_file(saved, change, message):
    _rewrite(saved, lambda d: change(d["card"]))
    with pytest.raises(OrbitSegError, match=f"{saved}.*{message}"):
        models.load_checkpoint(saved)


def test_fixed_inplane_size_card(tmp_path):
    model = models.create("seq-unet", **TINY_SEQ_UNET)
    card = models.make_card(model, window=(48, 400), spacing=(0.5, 0.5, 0.5), input_size=(64, 64, 3),
                            fixed_inplane_size=True)
    models.save_checkpoint(tmp_path / "paper-like.pt", model, card)
    loaded = models.read_card(tmp_path / "paper-like.pt")
    assert loaded.inplane_size == (64, 64) and loaded.size_multiple == 8 and loaded.patch_depth == 3


def test_save_refuses_a_card_that_does_not_describe_the_model(tmp_path):
    model = models.create("sv-net", **TINY_SV_NET)
    other = models.create("sv-net", **TINY_SV_NET, residual=False)
    with pytest.raises(OrbitSegError, match="card describes sv-net"):
        models.save_checkpoint(tmp_path / "x.pt", model, _card(other))
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(OrbitSegError, match="extra holds objects a weights-only load refuses"):
        models.save_checkpoint(tmp_path / "x.pt", model, _card(model), extra={"folder": tmp_path})
    assert not list(tmp_path.iterdir())


# --- ensembles -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, config, shape", [
    ("sv-net", TINY_SV_NET, (1, 1, 8, 8, 12)),
    ("seq-unet", TINY_SEQ_UNET, (2, 3, 1, 16, 24)),
])
def test_an_ensemble_checkpoint_predicts_the_members_mean_probability(tmp_path, name, config, shape):
    paths = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        member = _trained_like(name, config, shape)
        paths.append(tmp_path / f"m{seed}.pt")
        models.save_checkpoint(paths[-1], member, _card(member, description=f"member {seed}"))
    pair = models.save_ensemble(tmp_path / "pair.pt", paths[:2], description="two")
    # an ensemble among the sources contributes all its members
    card = models.save_ensemble(tmp_path / "three.pt", [tmp_path / "pair.pt", paths[2]])
    assert pair.members == 2 and card.members == 3 and card.metrics == {}
    assert card.training_data.startswith("ensemble of 3 networks, sigmoid outputs averaged: pair.pt (two, created")
    assert "m3.pt (member 3, created" in card.training_data and card.training_data.count("unit test") == 3
    assert card.summary().startswith(f"{name}; ensemble of 3; 0.5×0.4×0.5 mm grid")
    ensemble, loaded_card = models.load_checkpoint(tmp_path / "three.pt")
    assert loaded_card == card == models.read_card(tmp_path / "three.pt")
    assert isinstance(ensemble, models.Ensemble) and len(ensemble.members) == 3 and not ensemble.training
    assert (ensemble.name, ensemble.head) == (name, models.model_class(name).head)
    assert ensemble.config == card.config and card.config.items() >= config.items()

    x = torch.randn(shape)
    with torch.no_grad():
        singles = [models.load_checkpoint(p)[0](x) for p in paths]
        out = ensemble(x)
    mean = torch.stack([torch.sigmoid(s) for s in singles]).mean(0)
    assert out.shape == singles[0].shape
    torch.testing.assert_close(torch.sigmoid(out), mean, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(torch.sigmoid(singles[0]), mean, atol=1e-3)


def test_ensemble_sources_must_share_network_and_grid(tmp_path):
    model = _trained_like("sv-net", TINY_SV_NET, (1, 1, 8, 8, 8))
    models.save_checkpoint(tmp_path / "a.pt", model, _card(model), half=True)
    models.save_checkpoint(tmp_path / "b.pt", model, _card(model), half=True)
    models.save_checkpoint(tmp_path / "full.pt", model, _card(model))
    coarse = models.make_card(model, window=(48, 400), spacing=(1.0, 1.0, 1.0), input_size=(24, 16, 3))
    models.save_checkpoint(tmp_path / "coarse.pt", model, coarse)
    other = models.create("sv-net", **{**TINY_SV_NET, "widths": [4, 8, 8]})
    models.save_checkpoint(tmp_path / "other.pt", other, _card(other))
    with pytest.raises(OrbitSegError, match="cannot combine .*a.pt and .*coarse.pt: their spacing differ"):
        models.save_ensemble(tmp_path / "x.pt", [tmp_path / "a.pt", tmp_path / "coarse.pt"])
    with pytest.raises(OrbitSegError, match="their config differ"):
        models.save_ensemble(tmp_path / "x.pt", [tmp_path / "a.pt", tmp_path / "other.pt"])
    with pytest.raises(OrbitSegError, match="at least two models, got 1"):
        models.save_ensemble(tmp_path / "x.pt", [tmp_path / "a.pt"])
    assert not (tmp_path / "x.pt").exists()
    # float16 storage is kept only when every source has it
    models.save_ensemble(tmp_path / "half.pt", [tmp_path / "a.pt", tmp_path / "b.pt"])
    models.save_ensemble(tmp_path / "mixed.pt", [tmp_path / "a.pt", tmp_path / "full.pt"])
    dtypes = {n: {t.dtype for t in torch.load(tmp_path / n, weights_only=True)["state_dict"].values()
                  if t.is_floating_point()} for n in ("half.pt", "mixed.pt")}
    assert dtypes == {"half.pt": {torch.float16}, "mixed.pt": {torch.float32}}


@pytest.mark.parametrize("name, config, shape", [
    ("sv-net", TINY_SV_NET, (1, 1, 8, 8, 12)),
    ("seq-unet", TINY_SEQ_UNET, (2, 3, 1, 16, 24)),
])
def test_a_weight_average_holds_the_mean_of_the_networks_weights(tmp_path, name, config, shape):
    paths, states = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        member = _trained_like(name, config, shape)
        paths.append(tmp_path / f"m{seed}.pt")
        models.save_checkpoint(paths[-1], member, _card(member, description=f"member {seed}"))
        states.append(models.load_checkpoint(paths[-1])[0].state_dict())
    card = models.save_weight_average(tmp_path / "soup.pt", paths, description="soup")
    soup, loaded_card = models.load_checkpoint(tmp_path / "soup.pt")
    assert loaded_card == card and card.members == 1 and card.description == "soup" and card.metrics == {}
    assert card.training_data.startswith("weight average of 2 networks: m1.pt (member 1, created")
    assert "m2.pt (member 2, created" in card.training_data and card.spacing == [0.5, 0.4, 0.5]
    for key, tensor in soup.state_dict().items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (states[0][key] + states[1][key]) / 2)
        else:
            assert torch.equal(tensor, states[0][key])
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0] if states[0][k].is_floating_point())
    with torch.no_grad():
        assert soup(torch.randn(shape)).shape == models.load_checkpoint(paths[0])[0](torch.randn(shape)).shape
    models.save_ensemble(tmp_path / "pair.pt", paths)
    with pytest.raises(OrbitSegError, match="pair.pt is an ensemble of 2 networks; average single networks"):
        models.save_weight_average(tmp_path / "x.pt", [tmp_path / "pair.pt", paths[0]])
    with pytest.raises(OrbitSegError, match="at least two models, got 1"):
        models.save_weight_average(tmp_path / "x.pt", paths[:1])
    assert not (tmp_path / "x.pt").exists()


def test_an_ensemble_card_must_match_its_member_count(tmp_path):
    model = models.create("sv-net", **TINY_SV_NET)
    ensemble = models.Ensemble([model, models.create("sv-net", **TINY_SV_NET)])
    with pytest.raises(OrbitSegError, match="card describes 1 network\\(s\\), but the model has 2"):
        models.save_checkpoint(tmp_path / "x.pt", ensemble, _card(model))
    models.save_checkpoint(tmp_path / "e.pt", ensemble, _card(ensemble))
    _rewrite(tmp_path / "e.pt", lambda d: d["card"].update(members=3))
    with pytest.raises(OrbitSegError, match="configuration does not fit the weights"):
        models.load_checkpoint(tmp_path / "e.pt")
    _rewrite(tmp_path / "e.pt", lambda d: d["card"].update(members=0))
    with pytest.raises(OrbitSegError, match="members 0 is not a positive integer"):
        models.read_card(tmp_path / "e.pt")
    with pytest.raises(OrbitSegError, match="members differ"):
        models.Ensemble([model, models.create("sv-net", **{**TINY_SV_NET, "widths": [4, 8, 8]})])
