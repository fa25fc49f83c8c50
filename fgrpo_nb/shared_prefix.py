"""Shared-prefix forward: the prompt once per group, its keys/values shared by the G completions.

GRPO scores G completions of one prompt. The plain path (TRL's
`GRPOTrainer._get_per_token_logps_and_entropies`) forwards G x (P + T) tokens; here the
unique prompt of each group is forwarded once with a KV cache, the cache is repeated G
times along the batch (`DynamicCache.batch_repeat_interleave`, differentiable, so gradients
flow back into the prompt pass), and only the G x T completion tokens are forwarded on top
of it: P + G x T tokens per group.

Exactness against the plain path:
- positions: the plain path gives row positions `0 .. P+T-1` whatever the left padding
  (transformers' default `position_ids` ignore the attention mask), so the completion pass
  uses `P + arange(T)` with P the *padded* prompt length;
- the log-prob of completion token 0 comes from the prompt's last hidden state (left
  padding puts the real last prompt token at column P-1), tokens 1.. from the completion
  pass, all divided by `temperature` as TRL's fused LM head does (same kernel,
  `trl.kernels.ChunkedLogProbFunction`, when importable);
- padded completion positions get log-prob 0, as TRL's `labels == -100` positions do.

Anything this cannot serve (rows of a group with different prompts, gradient
checkpointing in training, caches that are not plain `DynamicLayer`s such as sliding-window
or recurrent layers, logit softcapping/scaling) falls back to the plain path with a
one-line warning.
"""

from __future__ import annotations

import inspect
import warnings

import torch
import torch.nn.functional as F

try:  # the kernel TRL's fused LM head uses, so numerics match the trainer's plain path
    from trl.kernels import ChunkedLogProbFunction as _ChunkedLogProb
except Exception:  # pragma: no cover - older/newer TRL
    _ChunkedLogProb = None

_CHUNK_SIZE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
_warned: set[str] = set()


class SharedPrefixUnsupported(Exception):
    """Raised internally when a model or batch cannot take the shared-prefix path."""


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"shared-prefix forward: falling back to the plain path ({reason})", stacklevel=3)


def _unwrap(model):
    """(causal LM, backbone, lm_head) for a plain or PEFT-wrapped causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(base, "base_model_prefix", "model")
    backbone = getattr(base, prefix, None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if backbone is None or head is None or backbone is base:
        raise SharedPrefixUnsupported(f"no backbone/lm_head on {type(base).__name__}")
    return base, backbone, head


def _cache_kwarg(backbone) -> str:
    params = inspect.signature(backbone.forward).parameters
    if "cache" in params:  # transformers >= 5.2x
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise SharedPrefixUnsupported(f"{type(backbone).__name__}.forward takes no cache")


def _check_model(base) -> None:
    cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if getattr(cfg, "is_encoder_decoder", False):
        raise SharedPrefixUnsupported("encoder-decoder model")
    for name in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"):
        if getattr(cfg, name, None) not in (None, 1, 1.0):
            raise SharedPrefixUnsupported(f"config.{name} is set")
    ckpt = [getattr(base, a, False) for a in ("is_activation_checkpointing",) if a in dir(type(base))]
    if not ckpt:  # older transformers
        ckpt = [getattr(base, "is_gradient_checkpointing", False)]
    if base.training and any(ckpt):
        raise SharedPrefixUnsupported("gradient checkpointing recomputes layers that write the cache")


def _token_logprobs(hidden, head, labels, mask, temperature, compute_entropy):
    """Per-token log-probs (and entropies) of `labels` under `head(hidden) / temperature`; 0 where ~mask."""
    B, T, H = hidden.shape
    flat = hidden.reshape(-1, H).to(head.weight.device)
    targets = labels.reshape(-1).clamp(min=0)
    if _ChunkedLogProb is not None:
        outs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
        logps, ent, *_ = _ChunkedLogProb.apply(flat, head.weight, head.bias, targets, temperature, _CHUNK_SIZE,
                                               None, 1.0, outs)
    else:
        logits = head(flat).float() / temperature
        logp_all = logits.log_softmax(-1)
        logps = logp_all.gather(-1, targets[:, None]).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1) if compute_entropy else None
    logps = logps.view(B, T).masked_fill(~mask, 0)
    ent = ent.view(B, T).masked_fill(~mask, 0) if ent is not None else None
    return logps, ent


def plain_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, temperature=1.0,
                   compute_entropy=False):
    """The plain path: prompt+completion per row, one forward, completion log-probs (as TRL computes them)."""
    base, backbone, head = _unwrap(model)
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attn = torch.cat([prompt_mask, completion_mask], 1)
    T = completion_ids.size(1)
    hidden = backbone(input_ids=input_ids, attention_mask=attn, use_cache=False).last_hidden_state
    logps, ent = _token_logprobs(hidden[:, -T - 1:-1], head, completion_ids, completion_mask.bool(),
                                 temperature, compute_entropy)
    return (logps, ent) if compute_entropy else logps


def shared_prefix_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size, *,
                           temperature=1.0, compute_entropy=False, check_groups=True):
    """Per-token completion log-probs `(B, T)` with each group's prompt forwarded once.

    Rows `g*G .. g*G+G-1` (G = `group_size`) must share one (left-padded) prompt, as in TRL's
    batches; completions are right-padded (`completion_mask`). Returns `(logps, entropies)`
    when `compute_entropy`. Falls back to `plain_logprobs` (warning once per reason) when the
    model or batch cannot be served.
    """
    kwargs = dict(temperature=temperature, compute_entropy=compute_entropy)
    try:
        return _shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size,
                       check_groups=check_groups, **kwargs)
    except SharedPrefixUnsupported as e:
        _warn_once(str(e))
        return plain_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, **kwargs)


def _shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, G, *, temperature,
            compute_entropy, check_groups):
    B, P = prompt_ids.shape
    T = completion_ids.size(1)
    if G < 1 or B % G:
        raise SharedPrefixUnsupported(f"batch {B} is not a multiple of group size {G}")
    if P == 0:
        raise SharedPrefixUnsupported("empty prompt")
    base, backbone, head = _unwrap(model)
    _check_model(base)
    cache_kw = _cache_kwarg(backbone)
    n = B // G
    uniq_ids, uniq_mask = prompt_ids[::G], prompt_mask[::G]
    if check_groups and G > 1:
        same = (prompt_ids.view(n, G, P) == uniq_ids[:, None]).all() and \
               (prompt_mask.view(n, G, P) == uniq_mask[:, None]).all()
        if not bool(same):
            raise SharedPrefixUnsupported("rows of a group do not share one prompt")

    device = prompt_ids.device
    # 1) the prompt, once per group; keep the cache in the graph (no detach)
    out = backbone(input_ids=uniq_ids, attention_mask=uniq_mask, use_cache=True,
                   position_ids=torch.arange(P, device=device)[None].expand(n, P))
    cache = getattr(out, cache_kw, None)
    if cache is None:
        cache = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
    layers = getattr(cache, "layers", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave") or layers is None:
        raise SharedPrefixUnsupported(f"no repeatable cache ({type(cache).__name__})")
    from transformers.cache_utils import DynamicLayer

    if any(type(layer) is not DynamicLayer for layer in layers):
        raise SharedPrefixUnsupported("cache has non-plain layers (sliding window / recurrent)")
    last_prompt_hidden = out.last_hidden_state[:, -1:]  # (n, 1, H): predicts completion token 0
    if T == 0:
        empty = completion_ids.new_zeros((B, 0), dtype=last_prompt_hidden.dtype)
        return (empty, empty.clone()) if compute_entropy else empty

    # 2) G copies of the keys/values (repeat_interleave is differentiable: grads sum back)
    cache.batch_repeat_interleave(G)
    attn = torch.cat([prompt_mask, completion_mask], 1)  # group rows share the prompt mask
    comp = backbone(input_ids=completion_ids, attention_mask=attn, use_cache=True,
                    position_ids=(P + torch.arange(T, device=device))[None].expand(B, T),
                    **{cache_kw: cache}).last_hidden_state  # (B, T, H)
    hidden = torch.cat([last_prompt_hidden.repeat_interleave(G, 0), comp[:, :-1]], 1)
    logps, ent = _token_logprobs(hidden, head, completion_ids, completion_mask.bool(), temperature,
                                 compute_entropy)
    return (logps, ent) if compute_entropy else logps
