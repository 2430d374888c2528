"""The device check: one prepared program that measures what matters on an accelerator.

Run by `experiments/device_check.py` (`make device-check`); `--quick` shrinks every size so the
whole program runs on CPU in CI.

Vocabulary:
  section   one measurement area, isolated: env (versions, devices, memory, matmul peaks),
            parity (forward, gradients and a sharded train step on the device against the
            CPU), sae (train-step throughput beside SAELens), forward (forward with cache beside
            TransformerLens), graph (attribution-graph construction), lm (an LM train step's
            MFU). A section that fails records its error and traceback tail; the rest still run.
  item      one measurement inside a section, e.g. `relu/float32` or `gpt2_small`; it fails,
            or is skipped (a peer not installed, bf16 not available here), on its own.
  job       one worker process (`harness.spawn`) running some items of one side of a section:
            `ours` (JAX, `interp.bench.device_jax`) or a peer (torch, `interp.bench.device_peers`).
            The driver imports neither JAX nor torch, so it never holds the accelerator, and a
            job that crashes, runs out of memory or is killed at its deadline loses only itself
            (its finished items come back through a partial-results file).
  budget    a section's seconds, plus what earlier sections left unused (later sections keep
            theirs); it is cut there, and skipped when less than half its budget is left before
            the global `deadline_s`. The JSON is rewritten after every section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable

from interp import choices, jsonio
from interp.bench import device_report, harness, measure
from interp.bench.device_sizes import FULL, QUICK, Sizes


# `interp.precision.DTYPES`, spelled out: this driver never imports JAX (it must not hold the
# accelerator that its workers use); tests/test_device_check.py checks the two agree.
PRECISIONS = ("float32", "bfloat16")


class Section(str, enum.Enum):
  ENV = "env"
  PARITY = "parity"
  SAE = "sae"
  FORWARD = "forward"
  GRAPH = "graph"
  LM = "lm"


# Seconds per section on one H200, summing to the default deadline (worker start-up included).
BUDGET_S = {"env": 25, "parity": 45, "sae": 100, "forward": 100, "lm": 90, "graph": 90}
# The default order puts the graph last: its 8,192-token build is the least predictable, and the
# last section gets all the time the others left unused.
DEFAULT_SECTIONS = ("env", "parity", "sae", "forward", "lm", "graph")
DEADLINE_S = 450.0
# --quick on CPU: seconds when the machine is idle, but CI machines are shared and compiles
# slow down many times under load, so the budgets only catch a hang.
QUICK_BUDGET_S, QUICK_DEADLINE_S = 240.0, 1200.0
# Peers: the import name checked before a worker starts, and what the JSON calls it.
PEERS = {"sae": ("sae_lens", "SAELens"), "forward": ("transformer_lens", "TransformerLens")}


@dataclasses.dataclass(frozen=True)
class DeviceCheckConfig:
  """Attributes:
    out: the JSON report, rewritten (atomically) after every section.
    quick: tiny sizes for every section (CI on CPU, under a minute).
    sections: the sections to run, in this order.
    precisions: compute precisions each section measures (bfloat16 needs interp.precision).
    deadline_s: seconds for the whole run; sections that would run past it are skipped
      (0: 450, or 1200 with --quick).
    budgets: NAME:SECONDS overrides of a section's time budget, e.g. graph:200.
  """

  out: str = "runs/device_check.json"
  quick: bool = False
  # Plain strings as flags, checked below so a bad name is a one-line error listing the valid.
  sections: tuple[str, ...] = DEFAULT_SECTIONS
  precisions: tuple[str, ...] = PRECISIONS
  deadline_s: float = 0.0
  budgets: tuple[str, ...] = ()

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    sections = [getattr(v, "value", v) for v in self.sections]
    choices.subset(sections, [k.value for k in Section], "--sections")
    set_("sections", tuple(Section(v) for v in sections))
    set_("precisions", choices.subset(self.precisions, PRECISIONS, "--precisions"))
    choices.numbers(self, non_negative=("deadline_s",))
    self.budget_table()  # checks --budgets now, at the door

  def budget_table(self) -> dict[str, float]:
    """Seconds per section: the defaults with --budgets applied."""
    table = {k: QUICK_BUDGET_S if self.quick else v for k, v in BUDGET_S.items()}
    for entry in self.budgets:
      name, _, seconds = entry.partition(":")
      try:
        value = float(seconds)
      except ValueError:
        value = float("nan")
      if name not in table or not value > 0:
        raise ValueError(f"--budgets={entry!r}: expected NAME:SECONDS with NAME one of "
                         f"{sorted(table)} and SECONDS positive")
      table[name] = value
    return table

  @property
  def deadline(self) -> float:
    """--deadline_s, or its default for the mode."""
    return self.deadline_s or (QUICK_DEADLINE_S if self.quick else DEADLINE_S)

  @property
  def sizes(self) -> Sizes:
    return QUICK if self.quick else FULL


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
  """What one job runs; `partial` is the file it rewrites after every item."""
  section: str
  items: tuple[str, ...]
  sizes: Sizes
  partial: str


CONFIG = WorkerConfig  # what `harness.worker_main` decodes


# ----- The worker side.

def worker(side: str, cfg: WorkerConfig) -> dict:
  """Runs `cfg.items` of one side of a section in this process: {item: result}.

  An item's exception is its result ({"error", "traceback"}); `Unavailable` is a skip.
  """
  from interp.bench import device_items  # imports JAX or torch only when an item runs
  results = {}
  for item in cfg.items:
    try:
      # Libraries' prints ("Moving model to device") go to stderr: stdout is the table.
      with contextlib.redirect_stdout(sys.stderr):
        results[item] = device_items.run_item(cfg.section, side, item, cfg.sizes)
    except device_items.Unavailable as e:
      results[item] = {"skipped": str(e)}
    except Exception as e:  # pylint: disable=broad-except  (one item never loses the others)
      results[item] = failure(e)
    jsonio.write_json_atomic(cfg.partial, jsonio.jsonable(results, digits=6))
  return results


def failure(e: BaseException) -> dict:
  """An exception as a JSON record: one line, and the traceback's last lines."""
  lines = traceback.format_exception(type(e), e, e.__traceback__)
  return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
          "traceback": "".join(lines)[-2000:]}


# ----- The driver.

def jobs(section: Section, cfg: DeviceCheckConfig) -> list[tuple[str, tuple[str, ...]]]:
  """(side, items) per worker process. Our memory measurements (forward, graph) get a process
  per item at full size, since JAX cannot reset a device's peak memory inside one process
  (torch can: `reset_peak_memory_stats`)."""
  sz, precs = cfg.sizes, list(cfg.precisions)
  split = lambda side, items: [(side, (i,)) for i in items] if not cfg.quick else [(side, items)]
  if section == Section.ENV:
    return [("ours", ("env",))]
  if section == Section.PARITY:
    return [("ours", tuple(f"{w}/{p}" for p in precs for w in ("forward", "gradients",
                                                                "sharded_step")))]
  if section == Section.SAE:
    items = tuple(f"{a}/{p}" for a in ("relu", "topk") for p in precs)
    return [("ours", items), ("saelens", items)]
  if section == Section.FORWARD:
    items = tuple(f"{m}/{p}" for m in sz.forward_models for p in precs)
    return split("ours", items) + [("transformer_lens", items)]
  if section == Section.GRAPH:
    return split("ours", tuple(f"{n}/float32" for n in sz.graph_lengths))
  return [("ours", tuple(f"lm/{p}" for p in precs))]


def worker_env(side: str, quick: bool) -> dict[str, str]:
  """A job's environment. JAX would otherwise take 75% of the accelerator's memory at start-up
  and hold it until exit: growing on demand leaves the device to the next worker (a torch
  peer, or JAX while the last one still exits), and the 0.95 cap (instead of 0.75) lets the
  longest graph use nearly all of it. peak_bytes_in_use counts allocations either way."""
  if side != "ours":
    return harness.worker_env()
  # --quick's numbers are not timings: compile fast.
  return harness.worker_env(xla_flags=harness.FAST_COMPILE_XLA_FLAGS if quick else "",
                            XLA_PYTHON_CLIENT_PREALLOCATE="false",
                            XLA_PYTHON_CLIENT_MEM_FRACTION="0.95")


def unavailable(section: Section, side: str, items: tuple[str, ...]) -> dict:
  """The items no worker needs to start for: those of a peer that is not installed."""
  if side in ("saelens", "transformer_lens"):
    module, label = PEERS[section.value]
    if importlib.util.find_spec(module) is None or importlib.util.find_spec("torch") is None:
      return {i: {"skipped": f"peer not installed: {label} ({module}, torch)"} for i in items}
  return {}


def run_job(section: Section, side: str, items: tuple[str, ...], cfg: DeviceCheckConfig,
            timeout: float) -> dict:
  """One worker; a crash or timeout keeps the items it finished and marks the rest."""
  with tempfile.TemporaryDirectory() as tmp:
    partial = os.path.join(tmp, "partial.json")
    job = WorkerConfig(section.value, items, cfg.sizes, partial)
    try:
      got = harness.spawn(__name__, side, job, env=worker_env(side, cfg.quick), timeout=timeout)
      why = None
    except subprocess.TimeoutExpired:
      got, why = {}, f"killed at the end of its share of the section's time ({timeout:.0f} s)"
    except subprocess.CalledProcessError as e:
      got, why = {}, (f"worker exited with status {e.returncode} (its stderr is in the console; "
                      "-9: killed, e.g. out of host memory)")
    if why is not None and os.path.exists(partial):
      got = jsonio.read_json(partial)
  return {i: got.get(i, {"error": why or "no result"}) for i in items}


def run_section(section: Section, cfg: DeviceCheckConfig, budget: float) -> dict:
  """Every job of one section within `budget` seconds: {side: {item: result}}.

  A job may use an equal share of what is left, so one that hangs cannot starve the rest; what
  a job leaves unused goes to the later ones (the last, e.g. the 8,192-token graph, gets all).
  """
  end, out, todo = time.monotonic() + budget, {}, []
  for side, items in jobs(section, cfg):
    skipped = unavailable(section, side, items)
    todo.append((side, items, skipped, tuple(i for i in items if i not in skipped)))
  to_start = sum(1 for *_, rest in todo if rest)
  for side, items, got, rest in todo:
    left = end - time.monotonic()
    if rest and left < 5:
      got.update({i: {"skipped": f"section budget ({budget:.0f} s) spent"} for i in rest})
    elif rest:
      got.update(run_job(section, side, rest, cfg, left / to_start))
      to_start -= 1
    out.setdefault(side, {}).update({i: got[i] for i in items})
  return out


def run(cfg: DeviceCheckConfig, argv=(), echo: Callable[[str], None] = print) -> dict:
  """Runs the sections in order, writing `cfg.out` after each; returns the report.

  Args:
    cfg: the run.
    argv: the command line, recorded in the report.
    echo: where the table's lines go as sections finish (print).

  Returns:
    The report: config, per-section results, goals and their status.
  """
  t0, budgets = time.monotonic(), cfg.budget_table()
  os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
  report = {"config": jsonio.jsonable(dataclasses.asdict(cfg)), "argv": list(argv),
            "sizes": dataclasses.asdict(cfg.sizes), "machine": measure.machine(),
            "definitions": device_report.DEFINITIONS, "sections": {}}
  echo(device_report.lines([device_report.HEADER]))
  for i, section in enumerate(cfg.sections):
    elapsed, budget = time.monotonic() - t0, budgets[section.value]
    left = cfg.deadline - elapsed
    # Time earlier sections left unused goes to this one; later sections keep their budgets.
    allowed = min(left, max(budget, left - sum(budgets[s.value] for s in cfg.sections[i + 1:])))
    s0 = time.monotonic()
    if left < budget / 2:
      entry = {"status": "skipped", "reason": f"{left:.0f} s left before --deadline_s="
               f"{cfg.deadline:g}, budget {budget:g} s"}
    else:
      try:
        entry = {"status": "ran", "results": run_section(section, cfg, allowed)}
      except Exception as e:  # pylint: disable=broad-except  (the next section still runs)
        entry = {"status": "failed", **failure(e)}
    entry["seconds"] = time.monotonic() - s0
    report["sections"][section.value] = entry
    report["goals"] = device_report.goals(report)
    report["elapsed_s"] = time.monotonic() - t0
    jsonio.write_json_atomic(cfg.out, jsonio.jsonable(report, digits=6))
    echo(device_report.lines(device_report.rows(section.value, entry)))
  echo("")
  echo(device_report.goal_table(report["goals"]))
  return report


if __name__ == "__main__":
  harness.worker_main("interp.bench.device_check")
