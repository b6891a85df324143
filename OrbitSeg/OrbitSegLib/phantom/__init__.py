"""Synthetic orbital CT phantom: realistic random heads with exact reference segmentations.

``generate_case(seed, index)`` draws the anatomy (:mod:`.anatomy`), builds it as layered implicit
shapes (:mod:`.head`, :mod:`.orbit`, :mod:`.shapes`), rasterises it with exact partial volume
(:mod:`.render`) and images it (:mod:`.scanner`); :mod:`.dataset` writes cases and a study list.
"""
from .case import PhantomCase, generate_case
from .dataset import exact_volumes, write_case, write_dataset

__all__ = ["PhantomCase", "exact_volumes", "generate_case", "write_case", "write_dataset"]
