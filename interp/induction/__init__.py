"""Induction heads (Olsson et al., 2022): trained attention-only toys and Gemma 3 270M.

Vocabulary (beyond `interp.circuits`):
  segment       a random run of tokens followed by its copy; the copy is predictable only by
                looking back (induction), and with variable segment lengths not by position
  phase change  the step at which in-context learning appears abruptly, together with a head
                whose prefix-matching score jumps (`phase`; a loss drop alone is not one)
  snapshot      head scores and the ICL score recorded during training

Modules:
  segments      variable-length repeated-segment token sources
  phase         phase-change detection: a head-score jump together with the ICL fall
  training      a small LM trained on any token source through `interp.train.lm`, with snapshots
  experiment    the three toys (1-layer, 2-layer, smeared keys), their scores, circuits and
                ablations: the library behind `experiments/induction_heads.py`
  gemma         the same measurements on Gemma 3 270M
  plots         the experiment's figures
  suite_entries its figure-suite entries (and Gemma 3 270M's offline smoke entry)
"""
