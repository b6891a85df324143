"""Result rows (dicts, as :mod:`OrbitSegLib.tables` makes them) as table nodes, and tables in the layout.

Column names stay the core's machine-readable names (``volume_cm3``, ``dice``, ...), the same as in
``volumes.csv``; titles, units and descriptions are set as column properties for display.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import slicer
import vtk

from OrbitSegLib.tables import REFERENCE_COLUMNS, VOLUME_COLUMNS

COLUMN_INFO: dict[str, tuple[str, str, str]] = {
    "side": ("Side", "", "Patient side: right = OD, left = OS"),
    "structure": ("Structure", "", "OrbitSeg structure key"),
    "segment": ("Segment", "", "Segment name"),
    "label_value": ("Label", "", "Label value in OrbitSeg labelmaps (right 1-6, left 7-12)"),
    "volume_cm3": ("Volume", "cm3", "Voxel count x voxel volume (as Segment Statistics volume_cm3)"),
    "qa": ("QA", "", "Quality flags: implausible, outside-normal, uncertain, input (docs/qa.md)"),
    "normal_range_cm3": ("Normal", "cm3", "Adult normal volume range (docs/qa.md gives the sources)"),
    "uncertainty": ("Uncertainty", "", "1 - soft Dice of the model's scores against the result (0: certain)"),
    "qa_reasons": ("QA reasons", "", "Why each flag was raised"),
    "reference_volume_cm3": ("Reference volume", "cm3", "Volume of the reference segment"),
    "difference_cm3": ("Difference", "cm3", "Volume minus reference volume"),
    "relative_error_pct": ("Relative error", "%", "(volume - reference) / reference"),
    "iou": ("IoU", "", "Intersection over union: TP/(TP+FP+FN)"),
    "dice": ("Dice", "", "2TP/(2TP+FP+FN)"),
    "vs": ("VS", "", "Volume similarity: 1 - |FN-FP|/(2TP+FP+FN)"),
    "sensitivity": ("Sensitivity", "", "TP/(TP+FN)"),
    "specificity": ("Specificity", "", "TN/(TN+FP)"),
}

COMPARISON_COLUMNS = ("segment", "side", "structure", "volume_cm3") + REFERENCE_COLUMNS
"""Columns of the per-structure agreement table of one study against its reference."""


def _column_array(name: str, values: list):
    """A VTK array for one column: int, float (NaN for missing) or string by the values' type."""
    present = [v for v in values if v is not None and v != ""]
    if present and all(isinstance(v, (bool, int)) for v in present):
        array = vtk.vtkIntArray()
        for v in values:
            array.InsertNextValue(int(v) if v not in (None, "") else 0)
    elif present and all(isinstance(v, (int, float)) for v in present):
        array = vtk.vtkDoubleArray()
        for v in values:
            array.InsertNextValue(float(v) if v not in (None, "") else math.nan)
    else:
        array = vtk.vtkStringArray()
        for v in values:
            array.InsertNextValue("" if v is None else str(v))
    array.SetName(name)
    return array


def rows_to_table_node(rows: Sequence[dict], table_node, columns: Sequence[str] | None = None):
    """Replace the table's content with ``rows``; ``columns`` default to all keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        for name in columns:
            table_node.AddColumn(_column_array(name, [r.get(name) for r in rows]))
            title, unit, description = COLUMN_INFO.get(name, (name, "", ""))
            table_node.SetColumnTitle(name, title)
            table_node.SetColumnUnitLabel(name, unit)
            table_node.SetColumnDescription(name, description)
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)
    finally:
        table_node.EndModify(was_modifying)
    return table_node


def volume_table(rows: Sequence[dict], table_node):
    """The per-structure volume table (side, structure, segment, label value, volume in cm³)."""
    return rows_to_table_node(rows, table_node, VOLUME_COLUMNS)


def comparison_table(rows: Sequence[dict], table_node):
    """The per-structure agreement table: volumes, differences, IoU, Dice, VS, sensitivity, specificity."""
    return rows_to_table_node(rows, table_node, COMPARISON_COLUMNS)


def table_node_rows(table_node) -> list[dict]:
    """The table's rows as dicts: floats for double columns, ints for integer columns, else strings."""
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for column in columns:
            if isinstance(column, vtk.vtkStringArray):
                row[column.GetName()] = column.GetValue(r)
            elif isinstance(column, (vtk.vtkFloatArray, vtk.vtkDoubleArray)):
                row[column.GetName()] = float(column.GetValue(r))
            else:
                row[column.GetName()] = int(column.GetValue(r))
        rows.append(row)
    return rows


def show_table_in_layout(app_logic, table_node) -> None:
    """Switch the layout to one with a table view (if it has none) and show ``table_node`` there."""
    scene = table_node.GetScene()
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode") if scene is not None else None
    if layout is not None:
        wanted = slicer.vtkSlicerTablesLogic.GetLayoutWithTable(layout.GetViewArrangement())
        if wanted != layout.GetViewArrangement():
            layout.SetViewArrangement(wanted)
    selection = app_logic.GetSelectionNode() if app_logic is not None else None
    if selection is not None:
        selection.SetActiveTableID(table_node.GetID())
        app_logic.PropagateTableSelection()
