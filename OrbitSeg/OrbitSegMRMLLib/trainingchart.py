"""The training log of ``orbitseg train`` as a table node and a live loss chart (plot series nodes).

The log's rows come from :func:`OrbitSegLib.protocol.read_training_log`; the job itself (its command
line, output folder and log path) is :class:`OrbitSegLib.protocol.TrainingJob`.
"""
from __future__ import annotations

import os

from OrbitSegLib.protocol import read_training_log

PLOTTED = (("train_loss", "Training loss"), ("val_loss", "Validation loss"), ("val_dice", "Validation Dice"))


def update_log_table(table_node, rows: list[dict]):
    """Show training log rows in a table node (the plot series read it)."""
    from .tablenodes import rows_to_table_node

    return rows_to_table_node(rows, table_node)


def loss_chart(table_node, chart_node):
    """Make ``chart_node`` plot the losses and validation Dice of ``table_node`` against ``step``.

    Creates the plot series nodes once (in the table's scene) and returns the chart node.
    """
    import slicer

    scene = table_node.GetScene()
    existing = {chart_node.GetNthPlotSeriesNode(i).GetYColumnName(): chart_node.GetNthPlotSeriesNode(i)
                for i in range(chart_node.GetNumberOfPlotSeriesNodes())}
    for column, title in PLOTTED:
        series = existing.get(column)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{chart_node.GetName()} {title}")
            chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetUniqueColor()
    chart_node.SetTitle("OrbitSeg training (all folds, one point per epoch)")
    chart_node.SetXAxisTitle("epoch (counted over all folds)")
    chart_node.SetYAxisTitle("loss / Dice")
    return chart_node


def log_nodes(scene, table_node=None, chart_node=None):
    """The training panel's log table and loss chart nodes (created in ``scene`` when missing), wired
    together; returns ``(table_node, chart_node)``."""
    table_node = table_node or scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("OrbitSeg training log"))
    chart_node = chart_node or scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName("OrbitSeg training"))
    update_log_table(table_node, [])
    return table_node, loss_chart(table_node, chart_node)


def refresh_log_table(log_path: str | os.PathLike, table_node) -> int:
    """Reload a training log into the table node when it has new rows (the chart follows); returns the
    number of complete rows."""
    rows = read_training_log(log_path)
    if rows and len(rows) != table_node.GetNumberOfRows():
        update_log_table(table_node, rows)
    return len(rows)
