"""Shared-prefix forward: the prompt once per group, its keys/values shared by the G completions.

GRPO scores G completions of one prompt. The plain path (TRL's
`GRPOTrainer._get_per_token_logps_and_entropies`) forwards G x (P + T) tokens; here each
distinct prompt is forwarded once with a KV cache, each row takes its prompt's copy of the
cache (`Cache.batch_select_indices`, an indexing op, so gradients of a group's rows sum back
into the one prompt pass), and only the completion tokens are forwarded on top of it:
P + G x T tokens per group.

Exactness against the plain path:
- positions: the plain path gives row positions `0 .. P+T-1` whatever the left padding
  (transformers' default `position_ids` ignore the attention mask), so the completion pass
  uses `P + arange(T)` with P the *padded* prompt length;
- the log-prob of completion token 0 comes from the prompt's last hidden state (left
  padding puts the real last prompt token at column P-1), tokens 1.. from the completion
  pass, all divided by `temperature` as TRL's fused LM head does (same kernel,
  `trl.kernels.ChunkedLogProbFunction`, when importable; `cast_lm_head_to_fp32` honoured);
- padded completion positions get log-prob 0, as TRL's `labels == -100` positions do.

In the trainers (`SharedPrefixMixin`, switched by `args.shared_prefix`): every call of
`_get_per_token_logps_and_entropies` (the loss's forward, old log-probs, reference log-probs
from a disabled adapter or a separate model) takes this path. Rows are grouped by equal
prompts, not by position, because TRL shuffles a generation batch before splitting it into
steps; `batch_size` chunks keep a prompt's rows together. Sampling gets the same treatment:
TRL's `generate` call is served by `prefilled_generate`, which prefills each distinct
prompt's first P-1 tokens once and hands the copies to `generate` (measured on the tiny
model, P=300, R=20, G=8: generation 0.151 s -> 0.068 s a step).
It also samples with `fgrpo_nb.sampling.fast_multinomial` (inverse-CDF draws from the same
distribution; torch's CPU multinomial was about a seventh of a tiny-model RL step).

Anything this cannot serve falls back to TRL's path with a one-line warning (once per
reason): gradient checkpointing in training (recomputed layers would write the cache
twice), caches that are not plain `DynamicLayer`s (sliding window, recurrent), logit
softcapping/scaling, multimodal inputs, a MoE load-balancing loss, a model wrapped by
DDP/FSDP/DeepSpeed (calling its backbone apart would skip the wrapper), prompt-learning
PEFT; for generation also beam search, a `cache_implementation`, vLLM and continuous
batching (those two keep their own caches and are left alone, silently).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from contextlib import nullcontext

import torch

from .sampling import fast_multinomial

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


def _output_cache(out, cache_kw: str):
    for name in (cache_kw, "past_key_values", "cache"):  # the output's name has moved across versions
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    return None


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


def _token_logprobs(hidden, head, labels, mask, temperature, compute_entropy, head_fp32=False):
    """Per-token log-probs (and entropies) of `labels` under `head(hidden) / temperature`; 0 where ~mask.

    `head_fp32` mirrors TRL's `cast_lm_head_to_fp32`: the projection in float32, outside autocast."""
    B, T, H = hidden.shape
    flat = hidden.reshape(-1, H).to(head.weight.device)
    targets = labels.reshape(-1).clamp(min=0)
    ctx = nullcontext()
    if head_fp32:
        flat = flat.float()
        ctx = torch.autocast(flat.device.type, enabled=False)
    with ctx:
        if _ChunkedLogProb is not None:
            outs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
            logps, ent, *_ = _ChunkedLogProb.apply(flat, head.weight, head.bias, targets, temperature,
                                                   _CHUNK_SIZE, None, 1.0, outs)
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
        B = prompt_ids.size(0)
        if group_size < 1 or B % group_size:
            raise SharedPrefixUnsupported(f"batch {B} is not a multiple of group size {group_size}")
        firsts = torch.arange(0, B, group_size, device=prompt_ids.device)
        if check_groups and group_size > 1:
            n, P = B // group_size, prompt_ids.size(1)
            same = (prompt_ids.view(n, group_size, P) == prompt_ids[firsts, None]).all() and \
                   (prompt_mask.view(n, group_size, P) == prompt_mask[firsts, None]).all()
            if not bool(same):
                raise SharedPrefixUnsupported("rows of a group do not share one prompt")
        row_prompt = torch.arange(B // group_size, device=prompt_ids.device).repeat_interleave(group_size)
        return _shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, firsts, row_prompt,
                       **kwargs)
    except SharedPrefixUnsupported as e:
        _warn_once(str(e))
        return plain_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, **kwargs)


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(firsts, row_prompt)`: the first row holding each distinct (ids, mask) prompt, and each row's
    index into `firsts`. Found by equality, not position: TRL shuffles the rows of a generation
    batch before splitting it into steps, so a group's rows are neither adjacent nor all present."""
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], 1)
    _, row_prompt = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(key.size(0), device=key.device)
    firsts = torch.full((int(row_prompt.max()) + 1 if rows.numel() else 0,), key.size(0), device=key.device,
                        dtype=torch.long).scatter_reduce(0, row_prompt, rows, "amin")
    return firsts, row_prompt


def grouped_prefix_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, temperature=1.0,
                            compute_entropy=False, head_fp32=False):
    """Like `shared_prefix_logprobs`, with rows grouped by equal prompts wherever they sit.

    Always returns `(logps, entropies or None)`; raises `SharedPrefixUnsupported` (no fallback
    here: the caller picks its own plain path).
    """
    if prompt_ids.size(0) == 0:
        raise SharedPrefixUnsupported("empty batch")
    firsts, row_prompt = distinct_prompts(prompt_ids, prompt_mask)
    result = _shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, firsts, row_prompt,
                     temperature=temperature, compute_entropy=compute_entropy, head_fp32=head_fp32)
    return result if compute_entropy else (result, None)


def _shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, firsts, row_prompt, *, temperature,
            compute_entropy, head_fp32=False):
    """Rows read prompt `firsts[row_prompt[row]]`; that prompt is forwarded once."""
    B, P = prompt_ids.shape
    T = completion_ids.size(1)
    if P == 0:
        raise SharedPrefixUnsupported("empty prompt")
    base, backbone, head = _unwrap(model)
    _check_model(base)
    cache_kw = _cache_kwarg(backbone)
    n = firsts.numel()
    device = prompt_ids.device
    # 1) each distinct prompt once; keep the cache in the graph (no detach)
    out = backbone(input_ids=prompt_ids[firsts], attention_mask=prompt_mask[firsts], use_cache=True,
                   position_ids=torch.arange(P, device=device)[None].expand(n, P))
    cache = _output_cache(out, cache_kw)
    layers = getattr(cache, "layers", None)
    if cache is None or not hasattr(cache, "batch_select_indices") or layers is None:
        raise SharedPrefixUnsupported(f"no selectable cache ({type(cache).__name__})")
    from transformers.cache_utils import DynamicLayer

    if any(type(layer) is not DynamicLayer for layer in layers):
        raise SharedPrefixUnsupported("cache has non-plain layers (sliding window / recurrent)")
    if T == 0:
        empty = completion_ids.new_zeros((B, 0), dtype=out.last_hidden_state.dtype)
        return (empty, empty.clone()) if compute_entropy else empty

    # 2) each row's copy of its prompt's keys/values: indexing is differentiable, so the
    # gradients of a group's rows sum back into its one prompt pass
    cache.batch_select_indices(row_prompt)
    last_prompt_hidden = out.last_hidden_state[:, -1:][row_prompt]  # (B, 1, H): predicts completion token 0
    attn = torch.cat([prompt_mask, completion_mask], 1)
    comp = backbone(input_ids=completion_ids, attention_mask=attn, use_cache=True,
                    position_ids=(P + torch.arange(T, device=device))[None].expand(B, T),
                    **{cache_kw: cache}).last_hidden_state  # (B, T, H)
    hidden = torch.cat([last_prompt_hidden, comp[:, :-1]], 1)
    logps, ent = _token_logprobs(hidden, head, completion_ids, completion_mask.bool(), temperature,
                                 compute_entropy, head_fp32)
    return (logps, ent) if compute_entropy else logps


# ---------------------------------------------------------------- generation


def prefilled_generate(generate, model, input_ids, attention_mask=None, **kwargs):
    """`generate(input_ids, ...)` with each distinct prompt's first P-1 tokens prefilled once and
    its cache copied to the prompt's rows; `generate` then runs the last prompt token and samples.

    Positions are generate's own (`attention_mask.cumsum - 1`, unlike the training forward), so
    the logits equal those of a plain `generate` within float tolerance. Anything it cannot serve
    runs plain `generate` with a one-line warning.
    """
    try:
        cache_kw, cache = _prefill(model, input_ids, attention_mask, kwargs)
    except SharedPrefixUnsupported as e:
        _warn_once(f"generation: {e}")
        cache_kw, cache = None, None
    with fast_multinomial():  # torch's sampler was a seventh of a tiny-model RL step (fgrpo_nb.sampling)
        if cache is None:
            return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return generate(input_ids=input_ids, attention_mask=attention_mask, **{cache_kw: cache}, **kwargs)


def _prefill(model, input_ids, attention_mask, kwargs):
    """(cache kwarg name, cache with one row per input row), or (None, None) when no prompt repeats."""
    config = kwargs.get("generation_config")
    if attention_mask is None:
        raise SharedPrefixUnsupported("no attention mask")
    if any(name in kwargs for name in ("cache", "past_key_values")):
        raise SharedPrefixUnsupported("a cache was passed already")
    if getattr(config, "cache_implementation", None) is not None:
        raise SharedPrefixUnsupported(f"cache_implementation={config.cache_implementation!r}")
    if getattr(config, "num_beams", 1) not in (None, 1) or getattr(config, "num_return_sequences", 1) not in (None, 1):
        raise SharedPrefixUnsupported("beam search or several returns per row")
    B, P = input_ids.shape
    firsts, row_prompt = distinct_prompts(input_ids, attention_mask)
    if P < 2 or firsts.numel() == B:
        return None, None  # nothing to share: plain generate, quietly
    base, backbone, _ = _unwrap(model)
    cache_kw = _cache_kwarg(backbone)
    mask = attention_mask[firsts]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # generate's own position ids
    out = backbone(input_ids=input_ids[firsts, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                   use_cache=True)
    cache = _output_cache(out, cache_kw)
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise SharedPrefixUnsupported(f"cache {type(cache).__name__} is not a plain DynamicCache")
    cache.batch_select_indices(row_prompt)
    return cache_kw, cache


# ---------------------------------------------------------------- in TRL's GRPOTrainer


def group_chunks(row_prompt: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    """Row indices of each forward chunk: rows of one prompt kept together, packed up to
    `batch_size` rows a chunk (TRL's memory cap), so a prompt is forwarded once per chunk it
    spans; only a group larger than `batch_size` spans more than one."""
    B = row_prompt.numel()
    if not batch_size or batch_size >= B:
        return [torch.arange(B, device=row_prompt.device)]
    by_prompt = torch.argsort(row_prompt, stable=True)
    pieces = [p for rows in by_prompt.split(torch.bincount(row_prompt).tolist()) for p in rows.split(batch_size)]
    chunks, current = [], []
    for piece in pieces:
        if current and sum(map(len, current)) + len(piece) > batch_size:
            chunks.append(torch.cat(current))
            current = []
        current.append(piece)
    return chunks + [torch.cat(current)]


def trainer_blocker(trainer, model, seq_len: int, logits_to_keep: int, compute_aux_loss: bool,
                    extra: dict) -> str | None:
    """Why a `_get_per_token_logps_and_entropies` call cannot take the shared path (None: it can).
    Model-level limits (checkpointing, softcapping, cache kinds) are found later, by `_shared`."""
    given = sorted(name for name, value in extra.items() if value is not None)
    if given:
        return f"multimodal inputs ({', '.join(given)})"
    if compute_aux_loss:
        return "MoE load-balancing loss requested"
    if not 0 < logits_to_keep < seq_len:
        return f"no prompt before the {logits_to_keep} scored tokens"
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False):
        return "DeepSpeed/FSDP shard the model; its backbone cannot be called apart"
    if trainer.accelerator.unwrap_model(model) is not model:
        # e.g. DistributedDataParallel: bypassing its forward would skip the gradient sync set-up
        return f"model wrapped by {type(model).__name__}"
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return "prompt-learning PEFT adds virtual tokens in its own forward"
    return None


def generation_blocker(trainer, images, multimodal_fields) -> str | None:
    """Why TRL's `generate` call cannot take a shared prefill (None: it can)."""
    if images is not None and any(x is not None for x in images):
        return "images in the prompts"
    if multimodal_fields:
        return f"multimodal inputs ({', '.join(sorted(multimodal_fields))})"
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False):
        return "DeepSpeed/FSDP gather the model for generation themselves"
    return None


class SharedPrefixMixin:
    """For TRL's GRPOTrainer (put it first in the bases), when `args.shared_prefix` is set: every
    `_get_per_token_logps_and_entropies` call (the loss's forward, old and reference log-probs,
    with a PEFT adapter disabled or a separate reference model alike) forwards each distinct
    prompt once, and sampling prefills it once (`prefilled_generate`). Off, TRL's methods run
    untouched. What it cannot serve goes to TRL's methods with a one-line warning (once per reason)."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **extra):
        def trl_path():
            return super(SharedPrefixMixin, self)._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)

        if not getattr(self.args, "shared_prefix", False):
            return trl_path()
        try:
            reason = trainer_blocker(self, model, input_ids.size(1), logits_to_keep, compute_aux_loss, extra)
            if reason:
                raise SharedPrefixUnsupported(reason)
            logps, entropies = self._shared_prefix_logps(model, input_ids, attention_mask, logits_to_keep,
                                                         batch_size, compute_entropy)
        except SharedPrefixUnsupported as e:
            _warn_once(str(e))
            return trl_path()
        return logps, entropies, None

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        def trl_path():
            return super(SharedPrefixMixin, self)._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                                        num_generations, *args, **kwargs)

        # vLLM and continuous batching manage their own caches; nothing for us to share there
        if not getattr(self.args, "shared_prefix", False) or self.use_vllm or \
                getattr(self, "use_transformers_continuous_batching", False):
            return trl_path()
        reason = generation_blocker(self, images, multimodal_fields)
        if reason:
            _warn_once(f"generation: {reason}")
            return trl_path()
        # TRL builds the padded prompts and calls `generate` deep inside its method, so the call is
        # intercepted on the model object TRL unwraps, for this call only
        model = self.accelerator.unwrap_model(self.model_wrapped)
        own = vars(model).get("generate")
        model.generate = functools.partial(prefilled_generate, own or model.generate, model)
        try:
            return trl_path()
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own

    def _shared_prefix_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy):
        P = input_ids.size(1) - logits_to_keep
        tensors = (input_ids[:, :P], attention_mask[:, :P], input_ids[:, P:], attention_mask[:, P:])
        _, row_prompt = distinct_prompts(tensors[0], tensors[1])
        chunks = group_chunks(row_prompt, batch_size)
        kwargs = dict(temperature=self.temperature, compute_entropy=compute_entropy,
                      head_fp32=bool(getattr(self.args, "cast_lm_head_to_fp32", False)))
        with self.accelerator.autocast():  # as TRL's forward runs
            if len(chunks) == 1:
                return grouped_prefix_logprobs(model, *tensors, **kwargs)
            parts = [grouped_prefix_logprobs(model, *(t[rows] for t in tensors), **kwargs) for rows in chunks]
        back = torch.argsort(torch.cat(chunks))  # chunk order -> the caller's row order
        logps = torch.cat([p[0] for p in parts])[back]
        entropies = torch.cat([p[1] for p in parts])[back] if compute_entropy else None
        return logps, entropies
