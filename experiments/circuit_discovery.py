"""Automatic circuit discovery over edges: EAP, EAP-IG, greedy growth, ACDC pruning.

  python experiments/circuit_discovery.py --workdir=runs/circ_ioi
  python experiments/circuit_discovery.py --workdir=runs/circ_gpt2 --model=gpt2:/path/to/hf/gpt2
  python experiments/circuit_discovery.py --workdir=runs/circ_toy --model=toy:runs/induction/attn2 \
      --task=induction --search=greedy --edges=10
  python experiments/circuit_discovery.py --workdir=runs/circ_gt --task=greater_than --metric=prob
  python experiments/circuit_discovery.py --workdir=runs/circ_pairs --task=pairs \
      --pairs_file=pairs.json --method=eap --metric=prob

Scores every edge of the model's computational graph (embedding, heads with q/k/v inputs, MLPs,
logits) by --method for --metric, picks a circuit by --search, and measures it and a
faithfulness curve with every other edge patched from the corrupted run (or its mean), beside a
hand-found head circuit measured the same way (--hand_heads; for Gemma IOI by default). Writes
scores.npz, circuit.json, results.json and figures into --workdir. The library is
`interp.discovery.experiment`.
"""

from __future__ import annotations

from interp import config_flags
from interp import usage
from interp.discovery import experiment
from interp.train import cli

_CONFIG = config_flags.define(experiment.DiscoveryConfig, meta={"workdir": {"required": True}})


def main(argv):
  cli.start(argv)
  r = experiment.run(_CONFIG.build())
  c, g = r["circuit"], r["graph"]
  print(f"{r['model']} {r['task']}: {g['n_edges']} edges; clean {r['curve']['clean']:.3f}, "
        f"corrupt {r['curve']['corrupt']:.3f}")
  print(f"circuit: {c['n_edges']} edges ({100 * c['fraction']:.1f}%), normalised metric "
        f"{c['normalised']:.3f}")
  print("curve: " + ", ".join(f"{n}:{v:.2f}" for n, v in zip(r["curve"]["counts"],
                                                           r["curve"]["normalised"])))
  if "hand_found" in r:
    h = r["hand_found"]
    print(f"hand-found circuit: {len(h['heads'])} heads, {h['n_edges']} edges, normalised "
          f"metric {h['normalised']:.3f}")
  if "induction" in r:
    print(f"previous-token -> induction key edge in the circuit: "
          f"{r['induction']['k_composition_in_circuit']}")
  print(f"seconds: {r['seconds']}; figures: {r['figures']}")


if __name__ == "__main__":
  usage.run(main)
