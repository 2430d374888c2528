"""The paper-figure suite on built-in offline defaults (what `make figures` runs).

  python experiments/figures.py --workdir=runs/figures [--only=lm_training] [--quick]

Writes each entry's run folder under --workdir and a report at <workdir>/report.md; the entries
are listed in `interp.figures`.
"""

from absl import flags

from interp import figures
from interp import usage

_WORKDIR = flags.DEFINE_string("workdir", "runs/figures", "Folder for the report and runs.")
_ONLY = flags.DEFINE_list("only", [], f"Entries to run (default all): {', '.join(figures.SUITE)}.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes, for smoke tests.")


def main(argv):
  del argv
  path = figures.run_suite(_WORKDIR.value, tuple(_ONLY.value), _QUICK.value)
  print(f"report: {path}")


if __name__ == "__main__":
  usage.run(main)
