"""The paper-figure report: one Markdown page with each experiment's figures and numbers.

Each entry of the suite returns a `Section`: a title, the PNGs it wrote, and rows of
(quantity, our value, the paper's value or expectation). `write_report` renders them to
`<workdir>/report.md`, figures linked by relative path, so the folder can be copied as is.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os


@dataclasses.dataclass
class Section:
  """One experiment's part of the report."""

  title: str
  summary: str = ""
  figures: list[str] = dataclasses.field(default_factory=list)  # paths as written
  rows: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # name, ours, paper
  seconds: float = 0.0
  error: str | None = None


def _fmt(x) -> str:
  if isinstance(x, float):
    return f"{x:.4g}"
  return str(x)


def write_report(workdir: str, sections: list[Section], title: str = "interp figure suite") -> str:
  """Writes report.md (and report.json with the same numbers) into `workdir`; returns the path."""
  lines = [f"# {title}", "",
           f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} on built-in offline "
           "defaults. Each section links its run folder's figures; numbers sit beside the "
           "paper's where there is one.", ""]
  for s in sections:
    lines += [f"## {s.title}", ""]
    if s.error:
      lines += [f"**Failed:** `{s.error}`", ""]
    if s.summary:
      lines += [s.summary, ""]
    if s.rows:
      lines += ["| quantity | interp | paper / expected |", "| --- | --- | --- |"]
      lines += [f"| {a} | {_fmt(b)} | {_fmt(c)} |" for a, b, c in s.rows]
      lines.append("")
    for fig in s.figures:
      rel = os.path.relpath(os.path.abspath(fig), os.path.abspath(workdir))
      lines += [f"![{os.path.basename(fig)}]({rel})", ""]
    lines += [f"_{s.seconds:.1f} s_", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump([dataclasses.asdict(s) for s in sections], f, indent=2, default=str)
  return path
