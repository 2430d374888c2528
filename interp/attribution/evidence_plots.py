"""Figures, statements and the one-page Markdown of the evidence report (`evidence_report`).

Everything here reads the JSON-able results, so a report can be redrawn from results.json.
Statements (`licenses`) are generated from the measured numbers with fixed thresholds on
Kendall tau (`STRONG`, `WEAK`): above STRONG an evidence type "ranks like" the causal effect,
below WEAK it "does not license" a causal reading.
"""

from __future__ import annotations

import os

import numpy as np

from interp.attribution.evidence import HEAD_EVIDENCE, TOKEN_METHODS
from interp.viz import plotting

STRONG, WEAK = 0.6, 0.3
NAMES = {"occlusion": "occlusion", "shapley": "Shapley (KernelSHAP / exact)", "lime": "LIME",
         "grad_x_input": "gradient x input", "integrated_gradients": "integrated gradients",
         "attention": "attention weight", "write_norm": "write norm ‖a v W_O‖",
         "direct_effect": "direct effect (path patching to logits)"}


def _num(x) -> float:
  return float("nan") if x is None else float(x)


def agreement_bars(results: dict, path: str) -> str:
  plt = plotting.pyplot()
  rows, settings = list(results["table"]), list(results["settings"])
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
  width = 0.8 / max(len(settings), 1)
  for ax, key, label in zip(axes, ("kendall_tau", "topk_overlap"),
                            ("Kendall tau with the causal effect", "top-k overlap")):
    for j, s in enumerate(settings):
      vals = [_num(results["table"][r][s][key]) for r in rows]
      ax.bar(np.arange(len(rows)) + j * width, vals, width, label=s)
    ax.set_xticks(np.arange(len(rows)) + width * (len(settings) - 1) / 2)
    ax.set_xticklabels([NAMES[r] for r in rows], rotation=40, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(label)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def head_scatter(results: dict, path: str) -> str:
  plt = plotting.pyplot()
  settings = list(results["settings"])
  fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False)
  for ax, s in zip(axes[0], settings):
    h = results["settings"][s]["heads"]
    att, wn = np.ravel(h["attention"]), np.ravel(h["write_norm"])
    eff = np.abs(np.ravel(h["total"]))
    sc = ax.scatter(att, wn, c=eff, s=12 + 120 * eff / max(eff.max(), 1e-9), cmap="viridis")
    n_heads = np.shape(h["attention"])[1]
    for i in np.argsort(-eff)[:3]:
      ax.annotate(f"L{i // n_heads}H{i % n_heads}", (att[i], wn[i]), fontsize=7)
    ax.set_xlabel("attention read -> source")
    ax.set_ylabel("write norm from source")
    ax.set_title(s, fontsize=9)
    fig.colorbar(sc, ax=ax, label="|total effect|")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def example_tokens(results: dict, path: str) -> str:
  """Prompt 0 of each setting: causal effect and every attribution, each row scaled to its
  largest |value|."""
  plt = plotting.pyplot()
  settings = list(results["settings"])
  fig, axes = plt.subplots(len(settings), 1, figsize=(11, 2.2 * len(settings)), squeeze=False)
  names = ("causal",) + TOKEN_METHODS
  for ax, s in zip(axes[:, 0], settings):
    r = results["settings"][s]
    attr = r["tokens"]["attributions"][0]
    players = ~np.asarray(r["keep"][0], bool)
    m = np.array([np.where(players, attr[n], 0.0) for n in names])
    m = m / np.maximum(np.abs(m).max(1, keepdims=True), 1e-12)
    ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    labels = r["labels"][0] if r["labels"] else [str(i) for i in range(m.shape[1])]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(["causal (patch)"] + [NAMES[n] for n in TOKEN_METHODS], fontsize=7)
    ax.set_title(f"{s}: prompt 0, each row / its max |value|", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def draw_all(results: dict, workdir: str) -> list[str]:
  return [agreement_bars(results, os.path.join(workdir, "agreement.png")),
          head_scatter(results, os.path.join(workdir, "heads.png")),
          example_tokens(results, os.path.join(workdir, "tokens.png"))]


def _verdict(tau: float) -> str:
  if np.isnan(tau):
    return "cannot be compared (a constant vector)"
  if tau >= STRONG:
    return "ranks like the causal effect"
  if tau >= WEAK:
    return "agrees only in part with the causal effect"
  return "does not license a causal reading"


def licenses(results: dict) -> dict:
  """{setting: [statements]} generated from the measured numbers (module docstring)."""
  out = {}
  for s, r in results["settings"].items():
    lines, t = [], results["table"]
    tok = sorted(TOKEN_METHODS, key=lambda m: -np.nan_to_num(_num(t[m][s]["kendall_tau"]), nan=-9))
    for m in tok:
      tau, top = _num(t[m][s]["kendall_tau"]), _num(t[m][s]["topk_overlap"])
      lines.append(f"{NAMES[m]}: tau={tau:.2f}, top-k overlap {top:.2f} across tokens; it "
                   f"{_verdict(tau)} of patching a token from the counterfactual.")
    for m in HEAD_EVIDENCE + ("direct_effect",):
      tau, top = _num(t[m][s]["kendall_tau"]), _num(t[m][s]["topk_overlap"])
      lines.append(f"{NAMES[m]}: tau={tau:.2f}, top-k overlap {top:.2f} against |total effect| "
                   f"across heads; it {_verdict(tau)}.")
    mm = r["heads"]["mismatches"]
    for key, what in (("attends_writes_little", "attend strongly yet write little"),
                      ("writes_attends_little", "write much yet attend little")):
      heads = ", ".join(f"{x['head']} (causal rank {x['causal_rank']})" for x in mm[key])
      lines.append(f"Heads that {what}: {heads or 'none'}.")
    if "known_ranks" in r:
      for role, rk in r["known_ranks"].items():
        lines.append(f"Known {role.replace('_', ' ')} head {r['known_heads'][role]}: rank "
                     + ", ".join(f"{k} #{v}" for k, v in rk.items()) + ".")
    if "known_tokens" in r:
      kt = r["known_tokens"]
      lines.append("Share of the two mechanism tokens (A[L-2], A[L-1] of the first copy) among "
                   "each method's top two: " + ", ".join(f"{k} {_num(v):.2f}"
                                                          for k, v in kt.items()) + ".")
    out[s] = lines
  return out


GENERAL = (
    "Token attributions (occlusion, Shapley, LIME, gradients) answer 'which input tokens does "
    "the output depend on, for this baseline': they license claims about input sensitivity, "
    "not about mechanism, and they change with the baseline (here a neutral token; the causal "
    "reference patches the counterfactual token).",
    "Attention weights license 'head h reads position j' and write norms 'head h moves "
    "something from j'; neither licenses 'head h matters for the output', which needs an "
    "intervention (the total effect of patching the head, or its direct path to the logits).",
    "A head acting through other heads (K-/Q-composition) shows up in the total effect but "
    "neither in attention at the read position nor in its direct effect.")


def write_markdown(results: dict, workdir: str, titles: dict) -> str:
  """report.md: the agreement table, the figures and the statements."""
  settings = list(results["settings"])
  lines = ["# Behavioural versus causal evidence", "",
           "Causal reference: tokens, the metric drop when one token's embedding (layer-0 "
           "residual stream) is patched from the counterfactual prompt; heads, |drop| when the "
           "head's output is patched from the counterfactual run. Entries: Kendall tau / top-k "
           "overlap (tokens: per prompt, averaged; heads: across all heads).", "",
           "| evidence | " + " | ".join(titles.get(s, s) for s in settings) + " |",
           "|---|" + "---|" * len(settings)]
  for m, row in results["table"].items():
    cells = [f"{_num(row[s]['kendall_tau']):.2f} / {_num(row[s]['topk_overlap']):.2f}"
             for s in settings]
    lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
  lines += [""] + [f"![{os.path.basename(f)}]({os.path.basename(f)})"
                   for f in results["figures"]]
  lines += ["", "## What each kind of evidence licenses", ""] + [f"- {g}" for g in GENERAL]
  for s, stmts in results["licenses"].items():
    secs = results["settings"][s]["seconds"]
    lines += ["", f"### {titles.get(s, s)} ({secs.get('total', 0):.0f} s)", ""]
    lines += [f"- {x}" for x in stmts]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
