"""What a dictionary is: its width, activation rule, sparsity penalty and dead-latent handling.

Vocabulary:
  d_in       width of the activations the dictionary reads (the residual stream, an MLP output).
  d_sae      number of latents (dictionary size); sharded over the `model` mesh axis (`latent`).
  pre        pre-activations x_c @ W_enc + b_enc, where x_c = x - b_dec (the pre-encoder bias).
  acts       latent activations after the activation rule, >= 0.
  L0         mean number of non-zero latents per token.
  dead       a latent that has not fired for `dead_steps` consecutive training steps.

Activation rules (each as its paper defines it):
  relu       ReLU + L1 (Towards Monosemanticity). `decoder_norm=unit`: decoder rows held at unit
             norm, the gradient component parallel to each row removed; `weighted`: the L1 term
             weights each latent by its decoder-row norm and rows are free (Anthropic, Apr 2024).
  topk       keep the k largest pre-activations per token (Gao et al. 2024), AuxK loss on dead
             latents.
  batchtopk  keep the k * batch largest over the whole batch (Bussmann et al. 2024); at inference a
             single threshold, estimated during training as an EMA of the smallest kept value.
  jumprelu   pre * H(pre - theta) with a learned per-latent theta; straight-through estimator
             with a rectangle kernel of width `bandwidth`; L0 penalty (Rajamanoharan et al. 2024).
  gated      a gate path H(x_c W_enc + b_gate) times a magnitude path ReLU(x_c (W_enc * e^r_mag)
             + b_mag); L1 on ReLU(gate pre-activations) and an auxiliary reconstruction through
             the frozen decoder (Rajamanoharan et al. 2024a).
  Matryoshka (Bussmann et al. 2025, Nabeshima 2024) is orthogonal to the rule: with
  `matryoshka=(m1, m2, ...)` the reconstruction loss is averaged over the nested prefixes of the
  first m1, m2, ..., d_sae latents, so early latents learn general features.
"""

from __future__ import annotations

import dataclasses
import enum
import json

from interp import choices


class Activation(str, enum.Enum):
  RELU = "relu"
  TOPK = "topk"
  BATCHTOPK = "batchtopk"
  JUMPRELU = "jumprelu"
  GATED = "gated"


class DecoderNorm(str, enum.Enum):
  UNIT = "unit"
  WEIGHTED = "weighted"


class DeadMitigation(str, enum.Enum):
  NONE = "none"
  AUXK = "auxk"          # topk / batchtopk only
  RESAMPLE = "resample"  # Bricken et al. 2023


@dataclasses.dataclass(frozen=True)
class SAEConfig:
  """Attributes:
    d_in, d_sae: input width and number of latents.
    activation: the rule (see module doc).
    k: latents kept per token (topk; batchtopk keeps k * batch over the batch).
    l1_coeff: weight of the L1 penalty (relu, gated). 5 is Anthropic's (April 2024) value for
      inputs with E||x||^2 = d_in. With unit rows L1 shrinks every ReLU activation by
      l1_coeff / 2, so it should stay well below twice a typical feature magnitude.
    decoder_norm: `unit` (every rule: decoder rows renormalised after each step, the parallel
      gradient removed) or `weighted` (free rows; the relu and gated L1 weighs each latent by
      its decoder-row norm).
    l0_coeff: weight of the L0 penalty (jumprelu): the squared reconstruction error, in
      normalised units (E||x||^2 = d_in, so about one unit per coordinate), that a latent must
      save on a token to be worth firing there. The reconstruction term is d_in * FVU on this
      scale, so the former default 1e-3 made the penalty negligible: a dense code wins and the
      thresholds fall instead of rising (4-sparse planted data, d_in = 64: L0 ~180 after 300
      steps at 1e-3; at 0.05, 65 latents at FVU 0.01 still beat 4 at FVU 0.2; at 1-4, L0 3-6).
    bandwidth: rectangle-kernel width of the JumpReLU straight-through estimator. Rajamanoharan
      et al. use 0.001 on inputs of unit mean squared norm, i.e. about 0.05 of a coordinate's
      scale at Gemma widths (d ~ 2304-3584); on our inputs a coordinate's scale is 1, hence 0.05.
    threshold_init: initial JumpReLU threshold (normalised units). Pre-activations start with a
      spread of about `init_decoder_norm` (encoder columns of that norm on inputs of unit
      coordinate scale), so 0.01 starts JumpReLU close to ReLU, as the paper does. The threshold
      is learned as itself (not log(theta): see `interp.sae.dictionary`), and Adam moves it by
      about lr per step, as fast as the pre-activations move: a run needs roughly final / lr
      steps to reach its final thresholds (~1.3 on planted 4-sparse data; 2,000 steps at
      lr 1e-3), and the L0 falls gradually on the way, which is how the features are found.
    dead_mitigation: `auxk` (topk family), `resample` (any rule) or `none`.
    dead_steps: a latent silent for this many steps is dead (AuxK's target, resampling's victims).
    aux_k: latents the AuxK loss reconstructs the residual with (0: d_in // 2).
    aux_coeff: AuxK loss weight (Gao et al.: 1/32), relative to the reconstruction loss measured
      as normalised MSE (FVU), as in Gao et al.'s code; `dictionary.loss` scales it accordingly.
    resample_every: Bricken resampling period in steps (with dead_mitigation=resample).
    threshold_lr: EMA rate of the BatchTopK inference threshold.
    matryoshka: increasing prefix sizes < d_sae for nested losses (empty: off).
    normalize_input: scale inputs by a constant so that their mean squared coordinate is 1
      (E||x||^2 = d_in), estimated from a sample before training; decode undoes it.
    sparse_cap: relu only, 0 = off. The training step first takes each token's sparse_cap
      largest pre-activations and packs the positive ones of the whole batch into one list
      (batch * sparse_cap / 2 slots, `activation_rules.relu_compact`); the decoder, the L1
      term and every gradient then touch only those codes, so the encoder's forward product is
      the only dense product left. Latents beyond a token's positive ones are 0 under ReLU, so
      this is the dense step exactly (up to float summation order), unless a token reaches the
      cap or the batch fills the slots: then the step is redone densely in the same call
      (`train.make_step`; the metric `sparse_step` says which ran), so nothing is dropped.
      (With the latents sharded over devices the codes are TopK's per-token [batch, sparse_cap]
      instead.) It pays little, and only while the codes are very sparse. On 2 CPU cores at
      d_in 512, 8,192 latents, batch 4,096 (`experiments/bench_sae.py --archs=relu,relu_sparse`,
      L0 16, cap 64): 5,223 activations/s against 4,937 dense, at a peak RSS delta of 1,363 MB
      against 605 MB (XLA's temporaries 1,110 MB against 457 MB: the packed rows, [batch * cap
      / 2, d_in] float32 gathers of 268 MB each, beside the dense fallback's buffers).
      Alone at that shape: 0.57 s a step at L0 8 (cap 32), 1.14 s at L0 32 (cap 96), against
      0.81-0.90 s dense: the gathers and scatters of the packed codes run at memory speed on
      XLA:CPU, and the per-token top_k grows with the cap.
    init_decoder_norm: norm of the decoder rows at init; the encoder starts as their transpose.
      With `decoder_norm=unit` the rows are back at unit norm after the first update, so this
      is the encoder's initial scale. 1.0 (tied unit rows, Gao et al.) suits TopK, whose
      selection is scale-free. For the ReLU family (relu, jumprelu, gated) prefer ~0.1, as in
      Anthropic's April 2024 update: from tied unit rows a dictionary of width d_sae
      reconstructs about (d_sae / 2 d_in) x at init (every positive latent adds its projection:
      4x at d_sae = 8 d_in), and the first hundreds of steps go to shrinking the encoder,
      killing latents on the way (planted data, ReLU+L1, 300 steps at lr 1e-2: mean max cosine
      0.63 from 1.0, 0.99 from 0.1; with l1_coeff=5 from 1.0 nearly every latent died).
      BatchTopK gains a little too (its global cut overshoots on high-norm tokens at init).
  """

  d_in: int
  d_sae: int
  activation: Activation = Activation.RELU
  k: int = 32
  l1_coeff: float = 5.0
  decoder_norm: DecoderNorm = DecoderNorm.UNIT
  l0_coeff: float = 1.0
  bandwidth: float = 0.05
  threshold_init: float = 0.01
  dead_mitigation: DeadMitigation = DeadMitigation.NONE
  dead_steps: int = 200
  aux_k: int = 0
  aux_coeff: float = 1 / 32
  resample_every: int = 500
  threshold_lr: float = dataclasses.field(default=0.01, metadata={"flag": None})
  matryoshka: tuple[int, ...] = ()
  normalize_input: bool = True
  init_decoder_norm: float = 1.0
  sparse_cap: int = 0

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    set_("activation", choices.choice(Activation, self.activation, "--activation"))
    set_("decoder_norm", choices.choice(DecoderNorm, self.decoder_norm, "--decoder_norm"))
    set_("dead_mitigation", choices.choice(DeadMitigation, self.dead_mitigation,
                                    "--dead_mitigation"))
    set_("matryoshka", tuple(int(m) for m in self.matryoshka))
    choices.check_int("d_in", self.d_in)
    choices.check_int("d_sae", self.d_sae)
    for flag in ("dead_steps", "resample_every"):
      choices.check_int(flag, getattr(self, flag))
    choices.check_int("aux_k", self.aux_k, minimum=0)
    choices.check_int("sparse_cap", self.sparse_cap, minimum=0)
    if self.sparse_cap and self.activation != Activation.RELU:
      raise ValueError(f"--sparse_cap={self.sparse_cap} applies to --activation=relu, not "
                       f"{self.activation.value}; leave it at 0")
    if self.sparse_cap > self.d_sae:
      raise ValueError(f"--sparse_cap={self.sparse_cap} must be at most --d_sae={self.d_sae}")
    for flag in ("l1_coeff", "l0_coeff", "aux_coeff"):
      choices.check_real(flag, getattr(self, flag), "[0, inf)")
    for flag in ("bandwidth", "threshold_init", "init_decoder_norm"):
      choices.check_real(flag, getattr(self, flag), "(0, inf)")
    choices.check_real("threshold_lr", self.threshold_lr, "(0, 1]")
    if self.topk_family and not 0 < self.k <= self.d_sae:
      raise ValueError(f"--k={self.k} must be between 1 and the dictionary width "
                       f"--d_sae={self.d_sae}")
    if self.dead_mitigation == DeadMitigation.AUXK and not self.topk_family:
      raise ValueError(f"--dead_mitigation=auxk needs --activation=topk or batchtopk, not "
                       f"{self.activation.value}; use --dead_mitigation=resample")
    if not 0 <= self.aux_k <= self.d_sae:
      raise ValueError(f"--aux_k={self.aux_k} must be between 0 and --d_sae={self.d_sae}")
    m = self.matryoshka
    if m and (list(m) != sorted(set(m)) or m[0] <= 0 or m[-1] >= self.d_sae):
      raise ValueError(f"--matryoshka={','.join(map(str, m))}: prefix sizes must increase "
                       f"strictly and lie in (0, d_sae={self.d_sae})")

  @property
  def topk_family(self) -> bool:
    return self.activation in (Activation.TOPK, Activation.BATCHTOPK)

  @property
  def effective_aux_k(self) -> int:
    return min(self.aux_k or max(self.d_in // 2, 1), self.d_sae)

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    for key in ("activation", "decoder_norm", "dead_mitigation"):
      out[key] = out[key].value
    out["matryoshka"] = list(self.matryoshka)
    return out

  @classmethod
  def from_dict(cls, d: dict) -> "SAEConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if k == "matryoshka" else v) for k, v in d.items() if k in fields})

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)
