"""The paper-figure report: one Markdown page with each experiment's figures and numbers.

Vocabulary:
  entry     a function `(workdir, quick) -> Section` that runs one experiment into `workdir`
            (`quick` shrinks it for smoke tests) and returns its numbers for the report
  Registry  the entries of one package, in the order they run (`@ENTRIES.register("name")`);
            `interp.figures` joins every package's registry into the suite
  Section   a title, the PNGs an entry wrote, links to pages it wrote (HTML dashboards,
            viewers), and rows of (quantity, our value, the paper's value or expectation)

`run_entries` runs entries one after another, each in `<workdir>/<name>/`, and `write_report`
renders their sections to `<workdir>/report.md`, figures and pages linked by relative path, so
the folder can be copied as is.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
import traceback
from typing import Callable


@dataclasses.dataclass
class Section:
  """One experiment's part of the report."""

  title: str
  summary: str = ""
  figures: list[str] = dataclasses.field(default_factory=list)  # paths as written
  links: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (label, path)
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
  lines += _time_table(sections)
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
    for label, target in s.links:
      rel = os.path.relpath(os.path.abspath(target), os.path.abspath(workdir))
      lines.append(f"- [{label}]({rel})")
    if s.links:
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


def _time_table(sections: list[Section]) -> list[str]:
  """Where the suite's wall time went: one row per entry, slowest first, and the total."""
  if not sections:
    return []
  lines = ["| entry | seconds | share |", "| --- | ---: | ---: |"]
  total = sum(s.seconds for s in sections)
  for s in sorted(sections, key=lambda s: -s.seconds):
    share = s.seconds / total if total > 0 else 0.0
    mark = " (failed)" if s.error else ""
    lines.append(f"| {s.title}{mark} | {s.seconds:.1f} | {share:.0%} |")
  lines += [f"| **total** | **{total:.1f}** | |", ""]
  return lines


Entry = Callable[[str, bool], Section]


class Registry(dict):
  """name -> entry, in registration order."""

  def register(self, name: str):
    """Decorator adding `fn` as entry `name`; a second entry of the same name is an error."""
    def deco(fn: Entry) -> Entry:
      if name in self:
        raise ValueError(f"figure entry {name!r} is registered twice")
      self[name] = fn
      return fn
    return deco


def run_entries(entries: dict[str, Entry], workdir: str, only: tuple[str, ...] = (),
                quick: bool = False) -> str:
  """Runs `entries` (all, or those named in `only`) and writes `<workdir>/report.md`.

  A failing entry does not stop the others; its section records the error, and the call
  raises RuntimeError after the report is written.

  Returns:
    The report's path.
  """
  unknown = set(only) - set(entries)
  if unknown:
    raise ValueError(f"--only: unknown entries {sorted(unknown)}; valid: {sorted(entries)}")
  os.makedirs(workdir, exist_ok=True)
  sections = []
  for name, fn in entries.items():
    if only and name not in only:
      continue
    start = time.time()
    try:
      section = fn(os.path.join(workdir, name), quick)
    except Exception as e:  # one broken entry must not hide the others' figures
      traceback.print_exc()
      section = Section(title=name, error=f"{type(e).__name__}: {e}")
    section.seconds = time.time() - start
    sections.append(section)
    print(f"figures: {name} done in {section.seconds:.1f}s", flush=True)
  path = write_report(workdir, sections)
  if any(s.error for s in sections):
    raise RuntimeError(f"some figure entries failed; see {path}")
  return path
