"""Short text blocks the notebooks print from their own numbers: the "What this run shows" box."""
from __future__ import annotations

TAKEAWAYS_TITLE = "What this run shows"


def takeaways(points: list[str], title: str = TAKEAWAYS_TITLE) -> str:
    """Markdown for a notebook's box of two or three takeaways, each computed from the run (a blockquote, which
    JupyterLab and the book both render as a box): title, then one numbered line per point."""
    points = [p.strip() for p in points if p and p.strip()]
    if not points:
        raise ValueError("a takeaways box needs at least one point")
    lines = [f"> **{title}**", ">"] + [f"> {i}. {p}" for i, p in enumerate(points, 1)]
    return "\n".join(lines)
