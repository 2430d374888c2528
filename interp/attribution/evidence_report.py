"""The evidence report: the library behind `experiments/evidence_report.py`.

For each setting (`SETTINGS`) it builds a `Prompts` batch (`evidence_tasks`), measures every
token attribution and every head's attention-level evidence against the causal effects
(`evidence`), and writes into `workdir`:
  results.json  per setting: token and head agreement, the mismatched heads, the per-head
                numbers, every prompt's attributions; "table": the agreement table (rows
                evidence types, columns settings, entries Kendall tau and top-k overlap with the
                causal effect); for the toy, the ranks of its known heads and the share of its
                known tokens each method puts on top
  *.png         agreement bars, attention vs write norm vs effect per head, one example prompt
  report.md     a one-page report: the table, the figures and what each kind of evidence
                licenses, stated from the measured numbers (`evidence_plots.licenses`)

Settings:
  ioi_gemma        Gemma 3 270M on IOI prompts (LD IO - S at END, p_ABC counterfactual)
  induction_gemma  Gemma 3 270M on <bos> + A + A (log-prob of the next copied token)
  induction_toy    the 2-layer attention-only toy, trained here, whose heads are known

Precision (`--precision`, `interp.precision`): every forward of the measurements (token
attributions, head evidence, patching; `interp.attribution.evidence`) and of the toy's head
scores runs in the policy's compute dtype; the toy trains in float32 (as the induction toys
do), and logits, metrics, effects and attributions are float32. results.json records the
resolved policy ("precision").
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
from absl import logging

from interp import choices, jsonio
from interp import precision as precision_lib
from interp.attribution import evidence, evidence_plots, evidence_tasks
from interp.models import zoo

SETTINGS = ("ioi_gemma", "induction_gemma", "induction_toy")
TITLES = {"ioi_gemma": "Gemma 3 270M, IOI", "induction_gemma": "Gemma 3 270M, repeated tokens",
          "induction_toy": "2-layer attention-only toy, repeated tokens"}


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  """Attributes:
    workdir: the run folder.
    settings: which of SETTINGS to run.
    n_prompts: prompts per setting; seg_len: L of the repeated-token prompts (Gemma and toy).
    evidence: the attribution settings on Gemma (KernelSHAP there: prompts have ~15 players).
    toy_steps: training steps of the toy; toy_shapley_samples: 0 = exact Shapley on the toy.
    gemma_low, gemma_high: token id range of Gemma's random segments.
    precision: compute dtype of every model forward (attributions, gradients, head evidence,
      patching; logits, metrics, effects and attributions stay float32): auto, float32 or
      bfloat16.
  """

  workdir: str
  settings: tuple[str, ...] = SETTINGS
  n_prompts: int = 8
  seg_len: int = 8
  evidence: evidence.EvidenceConfig = evidence.EvidenceConfig(shapley_samples=256)
  toy_steps: int = 600
  toy_shapley_samples: int = 0
  gemma_low: int = 1000
  gemma_high: int = 20000
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    precision_lib.Precision.parse(self.precision)  # a bad value fails here, naming --precision
    choices.subset(self.settings, SETTINGS, "--settings")
    if self.n_prompts < 2 or self.seg_len < 3:
      raise ValueError(f"need n_prompts >= 2 and seg_len >= 3, got {self.n_prompts}, "
                       f"{self.seg_len}")


def measure(cfg, params, prompts: evidence.Prompts, config: evidence.EvidenceConfig,
            precision: precision_lib.Precision | str | None = None) -> dict:
  """Token- and head-level evidence of one setting, with timings; every forward under
  `precision` (None: float32)."""
  t0 = time.perf_counter()
  tokens = evidence.token_level(cfg, params, prompts, config, precision)
  t1 = time.perf_counter()
  logging.info("token attributions of %d prompts: %.0f s", prompts.tokens.shape[0], t1 - t0)
  head = evidence.head_level(cfg, params, prompts, config, precision)
  t2 = time.perf_counter()
  logging.info("head evidence and patching: %.0f s", t2 - t1)
  return {"tokens": tokens, "heads": head, "labels": prompts.labels,
          "keep": prompts.keep, "source": prompts.source, "read": prompts.read,
          "seconds": {"tokens": round(t1 - t0, 1), "heads": round(t2 - t1, 1)}}


def _gemma_setting(name: str, model, config: ReportConfig,
                   precision: precision_lib.Precision) -> dict:
  if name == "ioi_gemma":
    prompts = evidence_tasks.ioi(model.tokenizer, config.n_prompts, seed=0)
  else:
    prompts = evidence_tasks.repeated(jax.random.key(0), config.n_prompts, config.seg_len,
                                      config.gemma_high, low=config.gemma_low,
                                      bos=model.tokenizer.bos_id, tokenizer=model.tokenizer)
  out = measure(model.cfg, model.params, prompts, config.evidence, precision)
  if name == "induction_gemma":
    known = evidence_tasks.known_tokens(prompts, config.seg_len, bos=True)
    out["known_tokens"] = evidence.known_token_overlap(out["tokens"]["attributions"], known,
                                                       prompts.keep)
  return out


def _toy_setting(config: ReportConfig, precision: precision_lib.Precision) -> dict:
  cfg, params, known, head_scores, _, vocab = evidence_tasks.train_toy(
      evidence_tasks.toy_model_dir(config.workdir), config.toy_steps, precision=precision)
  # Tokens from [1, vocab): 0 is the neutral masking token, so it must not be in a prompt.
  prompts = evidence_tasks.repeated(jax.random.key(1), config.n_prompts, config.seg_len, vocab,
                                    low=1)
  ev = dataclasses.replace(config.evidence, shapley_samples=config.toy_shapley_samples)
  out = measure(cfg, params, prompts, ev, precision)
  out["known_heads"] = {k: f"L{l}H{h}" for k, (l, h) in known.items()}
  out["known_head_scores"] = {"induction_prefix_matching":
                              float(head_scores["prefix_matching"][known["induction"]]),
                              "previous_token": float(head_scores["previous_token"]
                                                      [known["previous_token"]])}
  out["known_ranks"] = evidence.known_ranks(out["heads"], known)
  out["known_tokens"] = evidence.known_token_overlap(
      out["tokens"]["attributions"], evidence_tasks.known_tokens(prompts, config.seg_len, False),
      prompts.keep)
  return out


def table(settings: dict) -> dict:
  """{evidence type: {setting: {kendall_tau, topk_overlap}}} against the causal effect: tokens
  against counterfactual token patching, heads against |total effect| of head patching."""
  out = {}
  for m in evidence.TOKEN_METHODS:
    out[m] = {s: {k: r["tokens"]["agreement"][m][k] for k in ("kendall_tau", "topk_overlap")}
              for s, r in settings.items()}
  for m in evidence.HEAD_EVIDENCE + ("direct",):
    out[m if m != "direct" else "direct_effect"] = {
        s: {k: r["heads"]["agreement"][m]["total"][k] for k in ("kendall_tau", "topk_overlap")}
        for s, r in settings.items()}
  return out


def run(config: ReportConfig) -> dict:
  """The whole report; returns the results (also in <workdir>/results.json)."""
  start = time.perf_counter()
  os.makedirs(config.workdir, exist_ok=True)
  precision = precision_lib.Precision.parse(config.precision)
  settings = {}
  gemma = [s for s in config.settings if s.endswith("_gemma")]
  if gemma:
    model = zoo.load(zoo.ModelSpec(zoo.ModelKind.GEMMA3_270M))
    for name in gemma:
      t = time.perf_counter()
      settings[name] = _gemma_setting(name, model, config, precision)
      settings[name]["seconds"]["total"] = round(time.perf_counter() - t, 1)
  if "induction_toy" in config.settings:
    t = time.perf_counter()
    settings["induction_toy"] = _toy_setting(config, precision)
    settings["induction_toy"]["seconds"]["total"] = round(time.perf_counter() - t, 1)
  results = jsonio.jsonable({"config": dataclasses.asdict(config), "precision": precision.name,
                             "settings": settings, "table": table(settings)})
  results["figures"] = evidence_plots.draw_all(results, config.workdir)
  results["licenses"] = evidence_plots.licenses(results)
  results["wall_seconds"] = round(time.perf_counter() - start, 1)
  evidence_plots.write_markdown(results, config.workdir, TITLES)
  path = os.path.join(config.workdir, "results.json")
  jsonio.write_json_atomic(path, results, indent=1)
  return results
