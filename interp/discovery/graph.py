"""The model's computational graph at the level of edge-based circuit discovery.

Vocabulary:
  upstream node   something that writes to the residual stream: `embed` (token embedding, with
                  the learned positions and Gemma's sqrt(d) scale), each attention head `a{L}.{H}`
                  and each MLP `m{L}`. Index u in [0, n_up), in computation order.
  receiver        one input of a downstream node, which reads the residual stream: a head's query
                  `a{L}.{H}<q>`, key and value (`<k>`, `<v>`; with grouped K/V there is one key
                  and one value receiver per K/V head, `a{L}.g{G}<k>`), or the whole head `a{L}.{H}`
                  when q/k/v are not split; each MLP's input `m{L}`; and `logits`. Index r.
  edge (u, r)     upstream node u's output as read by receiver r: valid when u is computed before
                  r reads the stream (a head of layer L feeds the MLP of layer L and every later
                  layer; nothing feeds an earlier one).
  edge mask       float [n_up, n_recv]: 1 keeps the edge clean, 0 patches it (its upstream output
                  is replaced by the corrupted one in that receiver's input only); invalid edges
                  are ignored.

A receiver's input is the sum of the upstream outputs it reads (plus constant biases): the
residual stream *before* the node's own norm, which stays inside the node (recomputed from the
patched input). Gemma's post-norms belong to the upstream node (`interp.discovery.forward`).

Hand count for a 2-layer attention-only model with h heads, q/k/v split (g = h):
  layer 0: 3h receivers x 1 upstream (embed); layer 1: 3h receivers x (1 + h); logits: 1 + 2h,
  so 3h^2 + 8h + 1 edges.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interp.models.config import TransformerConfig


@dataclasses.dataclass(frozen=True)
class EdgeGraph:
  """Nodes, receivers and valid edges of one model.

  Attributes:
    cfg: the model's config.
    split_qkv: whether each head has separate q, k and v receivers.
    up_names: [n_up] upstream node names; recv_names: [n_recv] receiver names.
    valid: bool [n_up, n_recv], the edges that exist.
    recv_nodes: for each receiver, the upstream nodes it feeds (none for logits; a shared K/V
      head feeds several query heads).
  """

  cfg: TransformerConfig
  split_qkv: bool
  up_names: tuple[str, ...]
  recv_names: tuple[str, ...]
  valid: np.ndarray
  recv_nodes: tuple[tuple[int, ...], ...]

  @property
  def n_up(self) -> int:
    return len(self.up_names)

  @property
  def n_recv(self) -> int:
    return len(self.recv_names)

  @property
  def n_edges(self) -> int:
    return int(self.valid.sum())

  def edge_index(self) -> np.ndarray:
    """int [n_edges, 2]: (u, r) of every valid edge, in row-major order."""
    return np.argwhere(self.valid)

  def edge_names(self) -> list[str]:
    return [f"{self.up_names[u]}->{self.recv_names[r]}" for u, r in self.edge_index()]

  def head_up(self, layer: int) -> int:
    """Upstream index of head 0 of `layer`."""
    return 1 + layer * self.per_layer_up

  @property
  def per_layer_up(self) -> int:
    return self.cfg.n_heads + int(self.cfg.has_mlp)

  def layer_recv(self, layer: int) -> int:
    """Receiver index of the first receiver of `layer`."""
    return layer * self.per_layer_recv

  @property
  def n_attn_recv(self) -> int:
    cfg = self.cfg
    return cfg.n_heads + 2 * cfg.n_kv_heads if self.split_qkv else cfg.n_heads

  @property
  def per_layer_recv(self) -> int:
    return self.n_attn_recv + int(self.cfg.has_mlp)


def build(cfg: TransformerConfig, split_qkv: bool = True) -> EdgeGraph:
  """The edge graph of `cfg`'s model.

  Args:
    cfg: the model's config (toys, GPT-2, Gemma 3).
    split_qkv: separate q, k and v receivers per head (per K/V head for keys and values).

  Returns:
    An `EdgeGraph`.
  """
  h, g, mlp = cfg.n_heads, cfg.n_kv_heads, cfg.has_mlp
  up, up_layer = ["embed"], [-1]  # up_layer: the layer after whose attention the node exists
  recv, recv_layer, recv_nodes = [], [], []
  for layer in range(cfg.n_layers):
    first = len(up)
    up += [f"a{layer}.{i}" for i in range(h)]
    heads = list(range(first, first + h))
    if split_qkv:
      recv += [f"a{layer}.{i}<q>" for i in range(h)]
      recv_nodes += [(u,) for u in heads]
      for kind in ("k", "v"):
        for j in range(g):
          recv.append(f"a{layer}.{j}<{kind}>" if g == h else f"a{layer}.g{j}<{kind}>")
          recv_nodes.append(tuple(heads[j * (h // g):(j + 1) * (h // g)]))
    else:
      recv += [f"a{layer}.{i}" for i in range(h)]
      recv_nodes += [(u,) for u in heads]
    n_attn = len(recv) - len(recv_layer)
    recv_layer += [2 * layer] * n_attn
    up_layer += [2 * layer] * h  # heads exist after stage 2L (their attention)
    if mlp:
      recv.append(f"m{layer}")
      recv_layer.append(2 * layer + 1)
      recv_nodes.append((len(up),))
      up.append(f"m{layer}")
      up_layer.append(2 * layer + 1)
  recv.append("logits")
  recv_layer.append(2 * cfg.n_layers)
  recv_nodes.append(())
  # Stage numbering: embed is -1; layer L's attention reads at stage 2L and writes heads at 2L,
  # its MLP reads at 2L+1. An edge exists when the writer's stage is before the reader's.
  valid = np.asarray(up_layer)[:, None] < np.asarray(recv_layer)[None, :]
  return EdgeGraph(cfg, split_qkv, tuple(up), tuple(recv), valid, tuple(recv_nodes))
