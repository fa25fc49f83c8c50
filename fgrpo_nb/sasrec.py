"""SASRec (Kang & McAuley, 2018), small, in plain torch: the sequential-recommender baseline.

Item embeddings plus learned positions feed a few causal self-attention blocks; the hidden
state at each position scores every item by a dot product with the (shared) item table,
and training predicts the next item at every position. It learns only from the training
episodes (each one's history followed by its relevant items, all of which lie before the
user's validation window), never from validation or test targets. At test time it reads an
episode's history and scores that episode's candidate pool; `sasrec_order` sorts the pool.

Items never seen in training have no embedding worth the name; they score -inf and go last
(ties keep pool order), which is what a model trained on this data can honestly say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .episodes import Episode

PAD = 0  # index 0 of the item table: padding (left), never a target


@dataclass
class SASRecConfig:
    """Hyper-parameters of the baseline; the defaults train on 10k ML-1M episodes in about a minute
    on one CPU thread."""

    hidden: int = 64  # embedding and attention width
    blocks: int = 2  # causal self-attention blocks
    heads: int = 1  # attention heads per block (the SASRec paper uses 1)
    max_len: int = 10  # positions read from the end of a sequence (the episodes' history_len)
    dropout: float = 0.2  # on embeddings and inside blocks
    # "bce": one sampled negative per position (the SASRec paper's loss); "softmax": cross-entropy
    # over all items (on ML-1M a few points better at Hit@1, about 4x slower per epoch on CPU)
    loss: str = "bce"
    epochs: int = 30  # passes over the training sequences
    batch_size: int = 256  # sequences per step
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam L2
    seed: int = 0  # initialisation, dropout, batch order and BCE negatives


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=PAD)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, dim_feedforward=cfg.hidden, dropout=cfg.dropout,
                                           activation="relu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.items.weight, std=cfg.hidden ** -0.5)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item indices -> (B, L, hidden) states, each seeing only its past."""
        length = seqs.shape[1]
        x = self.items(seqs) * self.cfg.hidden ** 0.5 + self.positions.weight[-length:]
        x = self.dropout(x) * (seqs != PAD).unsqueeze(-1)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=seqs.device)
        # As in the original SASRec, pads are zeroed inputs rather than masked keys: a key mask
        # would leave the leading pad rows of a left-padded sequence with nothing to attend to.
        return self.norm(self.blocks(x, mask=causal, is_causal=True))

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, n_items + 1) next-item logits at every position."""
        return self(seqs) @ self.items.weight.T


@dataclass
class FittedSASRec:
    """A trained model with its vocabulary: what `sasrec_order` needs."""

    model: SASRec
    index: dict[str, int]  # candidate id (`i<item>`) -> row of the item table
    losses: list[float]  # mean training loss per epoch


def training_sequences(episodes: Sequence[Episode]) -> list[list[str]]:
    """History then relevant items of each training episode (the only data SASRec sees)."""
    if any(e.split != "train" for e in episodes):
        raise ValueError("SASRec trains on training episodes only; got other splits")
    return [list(e.history) + list(e.relevant) for e in episodes if len(e.history) + len(e.relevant) >= 2]


def _left_pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[-length:]
        if row:
            out[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
    return out


def fit_sasrec(train: Sequence[Episode], cfg: SASRecConfig | None = None, progress: bool = True) -> FittedSASRec:
    """Train next-item prediction on the training episodes' sequences."""
    from tqdm.auto import tqdm

    cfg = cfg or SASRecConfig()
    if cfg.loss not in ("softmax", "bce"):
        raise ValueError(f"loss must be 'softmax' or 'bce', got {cfg.loss!r}")
    sequences = training_sequences(train)
    if not sequences:
        raise ValueError("no training sequence has two items; SASRec needs histories")
    index = {cid: i + 1 for i, cid in enumerate(sorted({c for s in sequences for c in s}))}
    # One (input, target) pair of sequences per episode, cut to the last max_len + 1 items.
    encoded = [[index[c] for c in s][-(cfg.max_len + 1):] for s in sequences]
    inputs = _left_pad([s[:-1] for s in encoded], cfg.max_len)
    targets = _left_pad([s[1:] for s in encoded], cfg.max_len)

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = SASRec(len(index), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    bar = tqdm(range(cfg.epochs), desc="SASRec", disable=not progress, leave=False)
    for _ in bar:
        model.train()
        total, count = 0.0, 0
        for batch in torch.randperm(len(inputs), generator=gen).split(cfg.batch_size):
            seqs, tgt = inputs[batch], targets[batch]
            mask = tgt != PAD
            if cfg.loss == "softmax":
                logits = model.scores(seqs)[mask]
                logits[:, PAD] = float("-inf")
                loss = nn.functional.cross_entropy(logits, tgt[mask])
            else:
                h = model(seqs)[mask]
                neg = torch.randint(1, len(index) + 1, tgt[mask].shape, generator=gen)
                pos_logit = (h * model.items(tgt[mask])).sum(-1)
                neg_logit = (h * model.items(neg)).sum(-1)
                loss = nn.functional.binary_cross_entropy_with_logits(
                    torch.cat([pos_logit, neg_logit]), torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        losses.append(total / count)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return FittedSASRec(model, index, losses)


@torch.no_grad()
def pool_scores(fitted: FittedSASRec, episodes: Sequence[Episode], batch_size: int = 512) -> list[list[float]]:
    """One score per candidate of each episode's pool (-inf for items unseen in training)."""
    out = []
    for start in range(0, len(episodes), batch_size):
        batch = episodes[start:start + batch_size]
        seqs = _left_pad([[fitted.index[c] for c in e.history if c in fitted.index] for e in batch],
                         fitted.model.cfg.max_len)
        all_scores = fitted.model.scores(seqs)[:, -1]  # the state after the last history item
        for row, ep in zip(all_scores, batch):
            out.append([float(row[fitted.index[c]]) if c in fitted.index else float("-inf") for c in ep.pool_ids])
    return out


def sasrec_order(fitted: FittedSASRec, episode: Episode) -> list[str]:
    """Pool ids by SASRec score, best first; ties keep pool order."""
    scores = pool_scores(fitted, [episode])[0]
    ids = episode.pool_ids
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], i))]
