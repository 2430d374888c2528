r"""Every benchmark beside its peer, one after another, in one table.

  python experiments/bench_all.py --out_dir=runs/bench            # `make bench`
  python experiments/bench_all.py --quick --out_dir=/tmp/bench    # smoke sizes, minutes
  python experiments/bench_all.py --only=sae,toy --out_dir=runs/bench

Writes each benchmark's JSON and `table.md` / `table.json` under --out_dir; how to read the table
(rows, ratios, goals, statuses) is in `interp.bench.table`.
"""

from __future__ import annotations

import os

from absl import flags

from interp import choices, usage
from interp.bench import table

flags.DEFINE_string("out_dir", "runs/bench", "where the reports and the table go")
flags.DEFINE_bool("quick", False, "pass --quick to every benchmark (smoke sizes)")
flags.DEFINE_list("only", list(table.BENCHMARKS),
                  f"benchmarks to run, from {list(table.BENCHMARKS)}")
flags.DEFINE_float("timeout_s", 3 * 3600.0, "per benchmark")


def main(argv):
  del argv
  f = flags.FLAGS
  only = choices.subset(f.only, table.BENCHMARKS, "--only")
  choices.check_real("timeout_s", f.timeout_s, "(0, inf)")
  table.run_all(f.out_dir, only, f.quick, f.timeout_s)
  with open(os.path.join(f.out_dir, "table.md")) as fh:
    print(fh.read() + f"wrote {f.out_dir}/table.md and table.json")


if __name__ == "__main__":
  usage.run(main)
