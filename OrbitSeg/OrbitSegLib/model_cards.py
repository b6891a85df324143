"""The models OrbitSeg can use (bundled and user-trained) with their model cards, formatted for a panel
(HTML and a tooltip)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OrbitSegError
from .qa import trained_range


@dataclass
class ModelChoice:
    """One entry of the model list: ``card`` is the model card dict, or empty with ``problem`` set."""

    name: str
    path: Path
    origin: str
    card: dict = field(default_factory=dict)
    summary: str = ""
    problem: str = ""


def model_choices() -> list[ModelChoice]:
    """Every model found (see :mod:`.model_store`), bundled ones first, each with its card."""
    from .model_store import available_models, bundled_model_dirs, user_model_dir
    from .models.checkpoint import read_card

    bundled = {p.resolve() for p in bundled_model_dirs() if p.is_dir()}
    user = user_model_dir().resolve()
    choices = []
    for name, path in available_models().items():
        folder = path.resolve().parent
        origin = "bundled" if folder in bundled else "user" if folder == user else str(folder)
        choice = ModelChoice(name, path, origin)
        try:
            card = read_card(path)
            choice.card, choice.summary = card.to_dict(), card.summary()
        except OrbitSegError as exc:
            choice.problem = str(exc)
        choices.append(choice)
    return sorted(choices, key=lambda c: (c.origin != "bundled", c.name))


def _metric_lines(metrics: dict, prefix: str = "") -> list[str]:
    lines = []
    for key, value in metrics.items():
        label = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += _metric_lines(value, f"{label} / ")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"{label}: {value:.3g}")
        else:
            lines.append(f"{label}: {value}")
    return lines


def card_html(choice: ModelChoice) -> str:
    """The model card as HTML for the panel's model card section."""
    esc = html.escape
    if choice.problem:
        return f"<p><b>{esc(choice.name)}</b> ({esc(choice.origin)}) cannot be used:<br>{esc(choice.problem)}</p>"
    card = choice.card
    spacing = " × ".join(f"{v:g}" for v in card.get("spacing", []))
    size = " × ".join(str(v) for v in card.get("input_size", []))
    window = card.get("window") or ["?", "?"]
    recorded = card.get("training_acquisition")
    scans = trained_range(recorded).text() + ("" if recorded else " (not recorded: the bundled models' range)")
    rows = [
        ("Architecture", card.get("architecture", "?") + (f", ensemble of {card['members']} networks (outputs averaged)"
                                                          if card.get("members", 1) > 1 else "")),
        ("Description", card.get("description") or "—"),
        ("Origin", f"{choice.origin}: {choice.path}"),
        ("Structures", ", ".join(card.get("labels", []))),
        ("Model grid", f"{spacing} mm, patch {size} voxels"),
        ("CT window", f"level {window[0]} HU, width {window[1]} HU"),
        ("Training data", card.get("training_data") or "—"),
        ("Trained on scans", scans),
        ("Created", card.get("created") or "?"),
        ("Software", ", ".join(f"{k} {v}" for k, v in (card.get("software") or {}).items() if v)),
        ("Checksum", (card.get("checksum") or "")[:16]),
    ]
    table = "".join(f"<tr><td><b>{esc(k)}</b></td><td>{esc(str(v))}</td></tr>" for k, v in rows)
    metrics = _metric_lines(card.get("metrics") or {})
    held_out = "<br>".join(esc(m) for m in metrics) if metrics else "none recorded"
    return f"<table>{table}<tr><td><b>Held-out metrics</b></td><td>{held_out}</td></tr></table>"


def card_tooltip(choice: ModelChoice) -> str:
    """One or two lines for the model list's tooltip."""
    if choice.problem:
        return f"Cannot be used: {choice.problem}"
    return f"{choice.summary}\n{choice.origin}: {choice.path}"
