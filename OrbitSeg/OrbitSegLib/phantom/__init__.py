"""Synthetic orbital CT phantom: realistic random heads with exact reference segmentations.

``generate_case(seed, index)`` draws the anatomy (:mod:`.anatomy`; the second anatomy model:
:mod:`.sweep`), builds it as layered implicit shapes (:mod:`.head`, :mod:`.orbit`, :mod:`.shapes`), rasterises it with exact partial volume
(:mod:`.render`) and images it (:mod:`.scanner`); :mod:`.dataset` writes cases and a study list.
"""
from ..phantom_settings import ANATOMY_MODELS, WORLDS, case_id
from .case import PhantomCase, generate_case
from .dataset import exact_volumes, write_case, write_dataset

__all__ = ["ANATOMY_MODELS", "PhantomCase", "WORLDS", "case_id", "exact_volumes", "generate_case", "write_case",
           "write_dataset"]
