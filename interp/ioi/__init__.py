"""Indirect object identification (Wang et al., 2022): the IOI circuit of a model by path patching.

Vocabulary: IO, S (S1, S2), END, ABBA/BABA and p_ABC are defined in `prompts`; the head classes
(name movers, negative name movers, S-inhibition, induction, duplicate-token, previous-token)
and faithfulness in `circuit`.

Modules:
  prompts        IOI prompts and their p_ABC corruptions for any tokenizer
  circuit        the circuit search, per-head logit-difference attribution on any prompts
                 (`head_logit_diff_attribution`) and faithfulness
  experiment     baseline, classes, faithfulness and patching maps: the library behind
                 `experiments/ioi.py`
  plots          its figures
  suite_entries  its figure-suite entry
"""
