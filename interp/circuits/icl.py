"""Per-token loss and the in-context-learning score (Olsson et al., 2022).

Olsson et al. define the ICL score as the loss on the 500th token of a context minus the loss
on the 50th, averaged over many contexts of 512 tokens: negative when later tokens, which see
more context, are predicted better. Short contexts keep the two positions at the same fractions
of the context, `round(50 / 512 * n)` and `round(500 / 512 * n)` for n input tokens (a 32-token
context compares token 3 with token 31), clipped to [1, n - 1]. "Loss at token t" is the loss
of predicting token t from tokens 0..t-1; per-token losses are [b, n - 1], entry i for token
i + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

OLSSON_CONTEXT, OLSSON_EARLY, OLSSON_LATE = 512, 50, 500


def token_losses(logits, tokens) -> jax.Array:
  """Cross-entropy (nats) of predicting tokens[:, 1:] from logits[:, :-1]: [b n-1]."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def icl_positions(n_tokens: int) -> tuple[int, int]:
  """(early, late) token indices for an n-token context, scaled from Olsson's 50 and 500."""
  if n_tokens < 3:
    raise ValueError(f"the ICL score needs at least 3 tokens, got {n_tokens}")
  scale = n_tokens / OLSSON_CONTEXT
  clip = lambda t: min(max(t, 1), n_tokens - 1)
  early, late = clip(round(OLSSON_EARLY * scale)), clip(round(OLSSON_LATE * scale))
  return (early, late) if early < late else (1, n_tokens - 1)


def icl_score(losses, early: int, late: int) -> jax.Array:
  """Mean loss at token `late` minus mean loss at token `early`; losses [... b n-1]."""
  return losses[..., late - 1].mean(-1) - losses[..., early - 1].mean(-1)


def icl_from_logits(logits, tokens) -> jax.Array:
  """The ICL score of one batch at the scaled Olsson positions."""
  early, late = icl_positions(tokens.shape[1])
  return icl_score(token_losses(logits, tokens), early, late)
