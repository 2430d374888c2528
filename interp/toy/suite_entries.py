"""The toy-superposition families in the figure suite (`interp.figures`), plus a closing note.

Each entry runs `interp.toy.experiment.run_family` on the family's defaults (quick: its tiny
settings) in-process, into `<suite workdir>/<entry>/`, and turns results.json into report rows.
`toy_summary` (registered last) times interp's compiled step against the notebook-style PyTorch
loop when torch is importable, and quotes every family's headline numbers in one note.
"""

from __future__ import annotations

import json
import os


from interp.toy import experiment
from interp.viz.report import Registry, Section

ENTRIES = Registry()

FAMILIES = {"toy_intro": experiment.Family.INTRO, "toy_basic": experiment.Family.BASIC,
            "toy_phase": experiment.Family.PHASE, "toy_geometry": experiment.Family.GEOMETRY}


def _run(name: str, workdir: str, quick: bool) -> dict:
  from interp.train import checkpoint
  checkpoint.quiet_orbax_logs()
  return experiment.run_family(experiment.ToyExperimentConfig(
      family=FAMILIES[name], workdir=workdir, quick=quick))


def _speed_rows(res: dict) -> list[tuple[str, str, str]]:
  t = res["training"]
  return [("instances x steps, train seconds",
           f"{res['n_instances']} x {res['settings']['num_steps']}, "
           f"{t.get('train_seconds', 0):.1f} s", "-"),
          ("model-steps/s", f"{t.get('model_steps_per_s', 0):.0f}", "-")]


def _deg(values) -> str:
  return ", ".join(f"{v:.1f}" for v in values) + " deg"


@ENTRIES.register("toy_intro")
def toy_intro(workdir: str, quick: bool) -> Section:
  res = _run("toy_intro", workdir, quick)
  q = res["quantities"]
  dense, sparse = q["densest"], q["sparsest"]
  return Section(
      title="Toy models: 5 features in 2 dimensions (Elhage et al. 2022, intro figure)",
      summary=f"{res['settings']['seeds']} ReLU models per density, the lowest-loss one kept; "
              f"{res['settings']['num_steps']} AdamW steps at lr {res['settings']['lr']:g}.",
      figures=res["figures"],
      rows=[("density 1: features represented", str(dense["represented"]), "[0, 1]"),
            ("density 1: angle between them", _deg([dense["angle_deg"] or 0]), "90 deg"),
            (f"density {sparse['density']:.3g}: features represented",
             sparse["n_represented"], "5 (pentagon)"),
            (f"density {sparse['density']:.3g}: neighbour angles", _deg(sparse["gaps_deg"]),
             "72 deg each"),
            ("arrangements, dense -> sparse", "; ".join(q["arrangements"]),
             "orthogonal -> antipodal pairs -> pentagon")] + _speed_rows(res))


@ENTRIES.register("toy_basic")
def toy_basic(workdir: str, quick: bool) -> Section:
  res = _run("toy_basic", workdir, quick)
  q = res["quantities"]
  sp = ", ".join(f"{s:g}" for s in q["sparsities"])
  return Section(
      title="Toy models: linear vs ReLU output, n=20, m=5 (basic results)",
      summary=f"Sparsities {sp}; W^T W / b heat maps and per-feature norms coloured by "
              "superposition.",
      figures=res["figures"],
      rows=[("linear: features represented per sparsity", str(q["linear_n_represented"]),
             "5 at every sparsity (top m)"),
            ("linear represents exactly the top 5", q["linear_represents_top_m"], "True"),
            ("ReLU: features represented per sparsity", str(q["relu_n_represented"]),
             "5 when dense, rising above 5 as features get sparse"),
            ("ReLU: in superposition at the sparsest", q["relu"][-1]["n_superposed"], "> 0")]
      + _speed_rows(res))


@ENTRIES.register("toy_phase")
def toy_phase(workdir: str, quick: bool) -> Section:
  res = _run("toy_phase", workdir, quick)
  q = res["quantities"]
  s = res["settings"]
  return Section(
      title="Toy models: n=2, m=1 phase diagram (importance x density)",
      summary=f"{s['grid']}x{s['grid']} cells, {s['seeds']} models per cell, the lowest-loss "
              "kept, against the minimum of the exact expected loss over the three "
              "configurations.",
      figures=res["figures"],
      rows=[("agreement with the analytic phase diagram", f"{q['agreement']:.0%}",
             "high (the paper's empirical and theoretical diagrams match)"),
            ("agreement, every seed (none dropped)", f"{q['agreement_all_seeds']:.0%}", "-"),
            ("cells: not represented / superposition / dedicated (trained)",
             "{not represented} / {superposition} / {dedicated}".format(
                 **q["counts_empirical"]), "-"),
            ("cells: the same, analytic", "{not represented} / {superposition} / "
             "{dedicated}".format(**q["counts_analytic"]), "-"),
            ("superposed cells that are antipodal",
             "-" if q["superposition_antipodal_fraction"] is None
             else f"{q['superposition_antipodal_fraction']:.0%}", "100%")] + _speed_rows(res))


def _plateau_text(plateaus: list[dict]) -> str:
  if not plateaus:
    return "none"
  return "; ".join(f"{p['fraction']} over 1/(1-S) = {p['from']:.3g}-{p['to']:.3g} "
                   f"({p['points']} points, mean {p['mean_dstar']:.3f})" for p in plateaus)


@ENTRIES.register("toy_geometry")
def toy_geometry(workdir: str, quick: bool) -> Section:
  res = _run("toy_geometry", workdir, quick)
  q = res["quantities"]
  s = res["settings"]
  return Section(
      title=f"Toy models: dimensions per feature, n={s['n_features']}, m={s['n_hidden']}",
      summary=f"{s['grid']} densities 20^-linspace(0, 1), all importances 1; "
              f"{s['num_steps']} steps at batch {s['batch_size']} (the paper: 10k at 1024).",
      figures=res["figures"],
      rows=[("D* at density 1", f"{q['dstar'][0]:.3f}", "1"),
            ("D* at the sparsest", f"{q['dstar'][-1]:.3f}", "falling with sparsity"),
            ("D* plateaus", _plateau_text(q["plateaus"]), "sticks at 1/2"),
            ("represented features whose D_i is within 0.04 of 1, 3/4, 2/3, 1/2, 2/5 or 3/8",
             f"{q['fraction_of_represented_features_near_a_named_fraction']:.0%}",
             "clustered at these fractions")] + _speed_rows(res))


def _read(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


@ENTRIES.register("toy_summary")
def toy_summary(workdir: str, quick: bool) -> Section:
  """Times the n=20, m=5 step at 10 and 1,000 instances against the notebook-style PyTorch loop
  (torch from the test requirements; skipped when missing) and quotes every toy family."""
  from interp.toy import compare
  os.makedirs(workdir, exist_ok=True)
  bench = compare.interp_vs_torch(instances=(10, 100) if quick else (10, 1000),
                                  seconds=0.2 if quick else 1.0, reps=1 if quick else 3)
  with open(os.path.join(workdir, "bench.json"), "w") as f:
    json.dump(bench, f, indent=1)
  parent = os.path.dirname(workdir)
  found = {name: _read(os.path.join(parent, name, "results.json")) for name in FAMILIES}
  note = []
  if found["toy_intro"]:
    q = found["toy_intro"]["quantities"]
    note.append(f"intro: density 1 keeps features {q['densest']['represented']} at "
                f"{q['densest']['angle_deg']:.1f} deg; at density {q['sparsest']['density']:.3g} "
                f"{q['sparsest']['n_represented']} features with neighbour angles "
                f"{_deg(q['sparsest']['gaps_deg'])}")
  if found["toy_basic"]:
    q = found["toy_basic"]["quantities"]
    note.append(f"basic: linear represents {q['linear_n_represented']}, ReLU "
                f"{q['relu_n_represented']} features over the sparsities")
  if found["toy_phase"]:
    q = found["toy_phase"]["quantities"]
    note.append(f"phase: {q['agreement']:.0%} of cells agree with the analytic diagram")
  if found["toy_geometry"]:
    q = found["toy_geometry"]["quantities"]
    note.append(f"geometry: D* from {q['dstar'][0]:.2f} to {q['dstar'][-1]:.2f}, plateaus: "
                f"{_plateau_text(q['plateaus'])}")
  rows = []
  for n, r in bench["sizes"].items():
    torch_rate = r.get("torch_notebook")
    rows.append((f"{n} instances: model-steps/s interp vs PyTorch (10 at a time)",
                 f"{r['interp']:.0f} vs {torch_rate:.0f}" if torch_rate else f"{r['interp']:.0f}",
                 "PyTorch notebook ~2,700 on this machine"))
    if torch_rate:
      note.append(f"{n} instances: interp {r['interp']:.0f} model-steps/s, "
                  f"{r['interp'] / torch_rate:.1f}x the PyTorch loop")
  return Section(title="Toy models: closing note and speed",
                 summary=("Measured: " + "; ".join(note) + ".") if note else bench["note"],
                 rows=rows)
