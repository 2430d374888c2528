"""The paper-figure suite: every experiment's figures on built-in offline defaults, one report.

The suite is each package's `suite_entries.ENTRIES` (`interp.viz.report.Registry`) joined in
the order below, which is the order they run: later entries may read earlier ones' run folders
(clamping uses the `sae_gemma` dictionary). This module sits above every package, so no package
imports it; add an entry by registering it in its own package's `suite_entries.py` and, for a
new package, listing that registry here.

`DICTIONARIES` are the longer trainings of `make dictionaries` (`train_dictionaries`): each
writes under `<workdir>/dictionaries/<entry>/`, and that entry uses the result once it is
finished instead of training its own, shorter one.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from interp.attribution import suite_entries as attribution_entries
from interp.discovery import suite_entries as discovery_entries
from interp.graphs import suite_entries as graph_entries
from interp.induction import suite_entries as induction_entries
from interp.ioi import suite_entries as ioi_entries
from interp.sae import suite_entries as sae_entries
from interp.steering import suite_entries as steering_entries
from interp.toy import suite_entries as toy_entries
from interp.train import checkpoint
from interp.train import suite_entries as train_entries
from interp.viz import report

SUITE: dict[str, report.Entry] = {}
for _registry in (train_entries.ENTRIES, toy_entries.ENTRIES, sae_entries.ENTRIES,
                  induction_entries.ENTRIES, ioi_entries.ENTRIES, steering_entries.ENTRIES,
                  graph_entries.ENTRIES, attribution_entries.ENTRIES, discovery_entries.ENTRIES):
  SUITE.update(_registry)


# entry -> fn(entry's run folder, quick) -> training results: what `make dictionaries` trains.
DICTIONARIES: dict[str, Callable[[str, bool], dict]] = {"graph_gemma": graph_entries.train_longer}


def train_dictionaries(workdir: str, only: tuple[str, ...] = (), quick: bool = False) -> dict:
  """Trains the longer dictionaries (all, or those of the entries in `only`) for the suite in
  `workdir`; returns {entry: {"seconds", "step", "final"}}."""
  unknown = set(only) - set(DICTIONARIES)
  if unknown:
    raise ValueError(f"--only: no longer dictionaries for {sorted(unknown)}; entries that have "
                     f"them: {sorted(DICTIONARIES)}")
  checkpoint.quiet_orbax_logs()
  out = {}
  for name, fn in DICTIONARIES.items():
    if only and name not in only:
      continue
    start = time.time()
    results = fn(os.path.join(workdir, name), quick)
    out[name] = {"seconds": round(time.time() - start, 1), "step": results["step"],
                 "final": results["final"]}
    print(f"dictionaries: {name} done in {out[name]['seconds']:.1f}s", flush=True)
  return out


def run_suite(workdir: str, only: tuple[str, ...] = (), quick: bool = False) -> str:
  """Runs the suite's entries (all, or `only`) and writes `<workdir>/report.md`; returns its path."""
  checkpoint.quiet_orbax_logs()
  return report.run_entries(SUITE, workdir, only, quick)
