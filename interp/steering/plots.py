"""Figures of the feature-clamping experiment (`clamping.run`)."""

from __future__ import annotations
from interp.viz import plotting


def dose_response(workdir: str, results: dict) -> str:
  """Output-token mass, KL on unrelated prompts and held-out loss against the clamp."""
  plt = plotting.pyplot()
  dr = results["dose_response"]
  x = dr["multiples"]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  axes[0].plot(x, dr["target_prob"], "o-")
  axes[0].set_ylabel("next-token mass on the latent's\ntop-10 output tokens")
  axes[1].plot(x, dr["kl"], "o-", color="tab:red")
  axes[1].set_ylabel("KL(unclamped || clamped), nats")
  axes[2].plot(x, dr["loss"], "o-", color="tab:green", label="clamped")
  axes[2].axhline(dr["loss_unclamped"], color="gray", ls=":", label="no clamp")
  axes[2].set_ylabel("held-out next-token loss")
  axes[2].legend(fontsize=8)
  for ax in axes:
    ax.set_xlabel("clamp (x max activation)")
  fig.suptitle(f"clamping latent {results['latent']} at {results['hook']} "
               f"(output tokens: {', '.join(results['output_tokens'][:5])})", fontsize=10)
  return plotting.save(fig, workdir, "clamping_dose_response.png")


def save_all(workdir: str, results: dict) -> list[str]:
  return [dose_response(workdir, results)]
