"""Training SEQ-UNET and SV-Net on study lists, case folders or the phantom (used by ``orbitseg train``
and the OrbitSegTraining Slicer module)."""
from .data import GridSpec, Study, studies_from_folder, studies_from_list, studies_from_phantom
from .loop import TrainConfig, TrainResult, fold_split, train

__all__ = ["GridSpec", "Study", "TrainConfig", "TrainResult", "fold_split", "studies_from_folder",
           "studies_from_list", "studies_from_phantom", "train"]
