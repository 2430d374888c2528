"""The paper-figure suite: every experiment's figures on built-in offline defaults, one report.

The suite is each package's `suite_entries.ENTRIES` (`interp.viz.report.Registry`) joined in
the order below, which is the order they run: later entries may read earlier ones' run folders
(clamping uses the `sae_gemma` dictionary). This module sits above every package, so no package
imports it; add an entry by registering it in its own package's `suite_entries.py` and, for a
new package, listing that registry here.
"""

from __future__ import annotations

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


def run_suite(workdir: str, only: tuple[str, ...] = (), quick: bool = False) -> str:
  """Runs the suite's entries (all, or `only`) and writes `<workdir>/report.md`; returns its path."""
  checkpoint.quiet_orbax_logs()
  return report.run_entries(SUITE, workdir, only, quick)
