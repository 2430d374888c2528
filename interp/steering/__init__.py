"""Feature steering by clamping SAE latents (Templeton et al., 2024, "Golden Gate Claude").

Vocabulary:
  clamp          set chosen latents of an SAE spliced in at a hook, keeping its reconstruction
                 error, so an unclamped latent changes nothing
  dose-response  the clamp's effect as its value grows: output-token mass, KL on unrelated
                 prompts, held-out loss
  output tokens  the tokens a clamp promotes through the whole model

Modules:
  clamp          the clamp edit, dose-response, promoted tokens, clamped generation
  experiment     find a concept latent, its top contexts, dose-response and generations: the
                 library behind `experiments/feature_clamping.py`
  plots          its figure
  suite_entries  its figure-suite entry
"""
