"""Shared-prefix forward equals the plain path: log-probs, entropies and gradients."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fgrpo_nb.shared_prefix import plain_logprobs, shared_prefix_logprobs

TEMPERATURE = 0.7


def tiny_config():
    return LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                       tie_word_embeddings=False)


def smollm2_shaped_config():
    # SmolLM2-135M's head geometry (9 query heads, 3 KV heads of 64, hidden 576, tied head), 2 layers
    return LlamaConfig(vocab_size=501, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                       num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
                       rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
                       pad_token_id=2, tie_word_embeddings=True)


CONFIGS = {"tiny": tiny_config, "smollm2-shaped": smollm2_shaped_config}


def make_model(kind, lora=False, seed=0):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(CONFIGS[kind]())
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0))
        # LoRA B starts at zero; make it non-zero so the adapter actually shapes the result
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    model.train()
    return model


def make_batch(vocab, prompt_lens, completion_lens, pad=0, seed=1):
    """Groups of left-padded identical prompts, right-padded completions of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    G = len(completion_lens[0])
    n, P, T = len(prompt_lens), max(prompt_lens), max(max(c) for c in completion_lens)
    pid = torch.full((n * G, P), pad, dtype=torch.long)
    pm = torch.zeros_like(pid)
    cid = torch.full((n * G, T), pad, dtype=torch.long)
    cm = torch.zeros_like(cid)
    for i, (pl, cls) in enumerate(zip(prompt_lens, completion_lens)):
        prompt = torch.randint(3, vocab, (pl,), generator=g)
        for j, cl in enumerate(cls):
            r = i * G + j
            pid[r, P - pl:], pm[r, P - pl:] = prompt, 1
            cid[r, :cl], cm[r, :cl] = torch.randint(3, vocab, (cl,), generator=g), 1
    return pid, pm, cid, cm, G


BATCHES = {
    # prompts of different lengths across groups, completions of different lengths within groups
    "two-groups": ([9, 5], [[6, 3, 1, 6], [2, 6, 4, 5]]),
    "three-groups": ([4, 11, 7], [[3, 8, 8], [8, 1, 5], [7, 7, 2]]),
    "one-group": ([6], [[5, 2]]),
}


def loss_of(logps, mask):
    w = torch.linspace(-1, 1, logps.numel()).view_as(logps)  # distinct weights per token
    return (w * logps * mask).sum()


def grads(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_logprobs_and_grads_match_plain(kind, lora, batch):
    model = make_model(kind, lora)
    vocab = model.config.vocab_size
    pid, pm, cid, cm, G = make_batch(vocab, *BATCHES[batch])
    plain, plain_ent = plain_logprobs(model, pid, pm, cid, cm, temperature=TEMPERATURE, compute_entropy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback allowed here
        shared, shared_ent = shared_prefix_logprobs(model, pid, pm, cid, cm, G, temperature=TEMPERATURE,
                                                    compute_entropy=True)
    assert shared.shape == cid.shape
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_ent, plain_ent, atol=1e-5, rtol=1e-5)
    assert (shared[cm == 0] == 0).all()
    g_plain = grads(model, loss_of(plain, cm))
    g_shared = grads(model, loss_of(shared, cm))
    assert len(g_plain) > 0
    for a, b in zip(g_plain, g_shared):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    if lora:  # only adapters train, and they got gradient through the prompt pass too
        assert all(a.abs().sum() > 0 for a in g_shared)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_plain_matches_trl_fused_lm_head(kind):
    """`plain_logprobs` is what TRL's `_get_per_token_logps_and_entropies` computes."""
    from trl.trainer.utils import add_fused_lm_head

    model = make_model(kind)
    pid, pm, cid, cm, G = make_batch(model.config.vocab_size, *BATCHES["two-groups"])
    fused = copy.deepcopy(model)
    add_fused_lm_head(fused, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    input_ids, attn = torch.cat([pid, cid], 1), torch.cat([pm, cm], 1)
    T = cid.size(1)
    labels = input_ids.masked_fill(attn == 0, -100)
    labels[:, :-T] = -100
    out = fused(input_ids=input_ids, attention_mask=attn, labels=labels, fused_lm_head=True)
    trl_logps = out.log_probs[:, -T:]
    shared = shared_prefix_logprobs(fused, pid, pm, cid, cm, G, temperature=TEMPERATURE)
    torch.testing.assert_close(shared, trl_logps, atol=1e-5, rtol=1e-5)
    # and against a from-scratch log-softmax over the full logits
    logits = model(input_ids=input_ids, attention_mask=attn).logits[:, -T - 1:-1] / TEMPERATURE
    naive = logits.log_softmax(-1).gather(-1, cid[..., None]).squeeze(-1) * cm
    torch.testing.assert_close(shared, naive, atol=1e-5, rtol=1e-5)


def test_no_grad_eval_mode_matches():
    """Old / reference log-probs are computed under no_grad in eval mode."""
    model = make_model("tiny").eval()
    pid, pm, cid, cm, G = make_batch(model.config.vocab_size, *BATCHES["three-groups"])
    with torch.no_grad():
        plain = plain_logprobs(model, pid, pm, cid, cm)
        shared = shared_prefix_logprobs(model, pid, pm, cid, cm, G)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)


def test_fallback_when_group_rows_differ():
    model = make_model("tiny")
    pid, pm, cid, cm, G = make_batch(model.config.vocab_size, *BATCHES["two-groups"])
    pid[1, -1] = (pid[1, -1] + 1) % model.config.vocab_size  # row 1 no longer shares row 0's prompt
    with pytest.warns(UserWarning, match="falling back to the plain path"):
        shared = shared_prefix_logprobs(model, pid, pm, cid, cm, G)
    torch.testing.assert_close(shared, plain_logprobs(model, pid, pm, cid, cm), atol=1e-6, rtol=1e-6)


def test_fallback_under_gradient_checkpointing():
    model = make_model("tiny")
    model.activation_checkpointing_enable() if hasattr(model, "activation_checkpointing_enable") else model.gradient_checkpointing_enable()
    pid, pm, cid, cm, G = make_batch(model.config.vocab_size, *BATCHES["one-group"])
    with pytest.warns(UserWarning, match="gradient checkpointing"):
        shared = shared_prefix_logprobs(model, pid, pm, cid, cm, G)
    assert shared.shape == cid.shape


def test_fallback_when_batch_not_multiple_of_group():
    model = make_model("tiny")
    pid, pm, cid, cm, _ = make_batch(model.config.vocab_size, *BATCHES["two-groups"])
    with pytest.warns(UserWarning, match="multiple of group size"):
        shared = shared_prefix_logprobs(model, pid, pm, cid, cm, 3)
    torch.testing.assert_close(shared, plain_logprobs(model, pid, pm, cid, cm), atol=1e-6, rtol=1e-6)
