"""Batch mode: the one segmentation pipeline over a study list, with volume tables, agreement
statistics and an HTML report (used by ``orbitseg batch`` and by Slicer's ``OrbitSeg/OrbitSegScripts/batch.py``)."""
from .runner import BatchConfig, BatchCounts, BatchSummary, StudyOutcome, run_batch, run_study
from .studies import Study, StudyListError, read_studies

__all__ = ["BatchConfig", "BatchCounts", "BatchSummary", "Study", "StudyListError", "StudyOutcome", "read_studies",
           "run_batch", "run_study"]
