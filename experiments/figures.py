"""The paper-figure suite on built-in offline defaults (what `make figures` runs).

  python experiments/figures.py --workdir=runs/figures [--only=lm_training] [--quick]
  python experiments/figures.py --workdir=runs/figures --dictionaries   # make dictionaries

Writes each entry's run folder under --workdir and a report at <workdir>/report.md; the entries
are listed in `interp.figures`. --dictionaries trains the entries' longer dictionaries instead
(`interp.figures.DICTIONARIES`), which later runs of those entries use.
"""

from absl import flags

from interp import figures
from interp import usage

_WORKDIR = flags.DEFINE_string("workdir", "runs/figures", "Folder for the report and runs.")
_ONLY = flags.DEFINE_list("only", [], f"Entries to run (default all): {', '.join(figures.SUITE)}.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes, for smoke tests.")
_DICTIONARIES = flags.DEFINE_bool(
    "dictionaries", False, "Train the longer dictionaries that later runs of their entries use "
    f"({', '.join(figures.DICTIONARIES)}) instead of running the entries.")


def main(argv):
  del argv
  if _DICTIONARIES.value:
    for name, r in figures.train_dictionaries(_WORKDIR.value, tuple(_ONLY.value),
                                              _QUICK.value).items():
      final = {k: round(v, 4) for k, v in r["final"].items() if k in ("loss", "fvu", "l0")}
      print(f"{name}: step {r['step']}, {r['seconds']:.0f} s, final {final}")
    return
  path = figures.run_suite(_WORKDIR.value, tuple(_ONLY.value), _QUICK.value)
  print(f"report: {path}")


if __name__ == "__main__":
  usage.run(main)
