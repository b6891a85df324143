"""OrbitSeg's segmentation models: SEQ-UNET and SV-Net, their registry and checkpoint format.

- :func:`create` builds a model by name (``"seq-unet"``, ``"sv-net"``) from a preset
  (``"default"``: the bundled models' small configuration; ``"paper"``: the published one).
- :func:`save_checkpoint` / :func:`load_checkpoint` / :func:`read_card` write and read weights with their
  :class:`ModelCard`; :func:`record_metrics` adds held-out metrics to a saved card.
- :func:`save_ensemble` combines checkpoints into one :class:`Ensemble` checkpoint (sigmoid outputs
  averaged), which loads and predicts like a single model; :func:`save_weight_average` writes one
  network with the mean weights of networks fine-tuned from a common start.

Every model has ``name``, ``head`` (``"sigmoid"`` or ``"sigmoid_nobg"``), ``size_multiple`` (spatial
sizes must be multiples of it) and ``config`` (complete constructor arguments). No Slicer imports here.
"""
from OrbitSegLib.models.checkpoint import (
    FORMAT_VERSION, HEAD_LABELS, ModelCard, load_checkpoint, make_card, read_card, read_extra, record_metrics,
    save_checkpoint, save_ensemble, save_weight_average,
)
from OrbitSegLib.models.convlstm import BiConvLSTM, ConvLSTMCell
from OrbitSegLib.models.ensemble import Ensemble
from OrbitSegLib.models.registry import NAMES, PRESETS, create, model_class, preset_config
from OrbitSegLib.models.seq_unet import SeqUNet
from OrbitSegLib.models.sv_net import SVNet

__all__ = [
    "BiConvLSTM", "ConvLSTMCell", "Ensemble", "FORMAT_VERSION", "HEAD_LABELS", "ModelCard", "NAMES", "PRESETS",
    "SVNet", "SeqUNet", "create", "load_checkpoint", "make_card", "model_class", "preset_config", "read_card",
    "read_extra", "record_metrics", "save_checkpoint", "save_ensemble", "save_weight_average",
]
