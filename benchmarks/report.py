"""What a benchmark reports: rows of medians, ratios against targets, rendered as Markdown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from measure import Sample


@dataclass
class Row:
    """One contender's median; ``reps`` is how many samples the median is over."""

    label: str
    sample: Sample
    reps: int
    note: str = ""


@dataclass
class Target:
    """A ratio (or a size) and the bound the issue sets for it."""

    label: str
    value: float
    bound: float
    sense: Literal["<=", ">="]
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.value <= self.bound if self.sense == "<=" else self.value >= self.bound


@dataclass
class Section:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| contender | median wall | CPU (user+sys) | CPU/wall | peak RSS | reps |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for row in self.rows:
            s = row.sample
            cpu = f"{s.cpu:.2f} s" if s.cpu else "-"
            util = f"{s.cpu / s.wall:.2f}" if s.cpu and s.wall else "-"
            rss = f"{s.maxrss / 2**20:.0f} MiB" if s.maxrss else "-"
            label = row.label + (f" ({row.note})" if row.note else "")
            lines.append(f"| {label} | {s.wall:.2f} s | {cpu} | {util} | {rss} | {row.reps} |")
        if self.targets:
            lines += ["", "| measure | value | target | met |", "|---|---:|---:|:---:|"]
            for t in self.targets:
                value = f"{t.value:.2f}{t.unit}" if t.unit == "x" else f"{t.value:.0f} {t.unit}"
                bound = (
                    f"{t.sense} {t.bound:g}{t.unit}"
                    if t.unit == "x"
                    else (f"{t.sense} {t.bound:g} {t.unit}")
                )
                lines.append(f"| {t.label} | {value} | {bound} | {'yes' if t.met else '**no**'} |")
        for note in self.notes:
            lines += ["", note]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "rows": [
                {"label": r.label, "note": r.note, "reps": r.reps, **asdict(r.sample)}
                for r in self.rows
            ],
            "targets": [{**asdict(t), "met": t.met} for t in self.targets],
            "notes": self.notes,
        }
