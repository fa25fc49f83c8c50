"""The shared-prefix forward inside the trainers: switch on equals switch off (F-GRPO and
GRPO), F-GRPO == GRPO still holds with it on, and what it cannot serve goes to TRL's path."""

from __future__ import annotations

import copy
import warnings
from contextlib import nullcontext

import pytest
import torch
from peft import LoraConfig
from transformers import GenerationConfig
from trl import GRPOTrainer

import fgrpo_helpers as H
from fgrpo_nb import shared_prefix as SP
from fgrpo_nb.sampling import fast_multinomial
from fgrpo_nb.trainer import (
    FGRPOConfig, FGRPOTrainer, GRPOPhaseMetricsTrainer, SharedPrefixGRPOConfig, SharedPrefixGRPOTrainer,
    make_trainer,
)

TORCH_MULTINOMIAL = torch.multinomial

FALLBACK = "shared-prefix forward: falling back"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(SP, "_warned", set())  # each test sees its own one-time warnings


@pytest.fixture
def shared_calls(monkeypatch):
    """Counts forwards that took the shared path, so no test passes by silently falling back."""
    calls = []
    real = SP._shared

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)  # counted only once it returned: a fallback raises first
        calls.append(torch.is_grad_enabled())  # True: the loss's forward; False: old/ref log-probs
        return out

    monkeypatch.setattr(SP, "_shared", counting)
    return calls


def build(method, shared, tmp_path, model=None, fixed_rollouts=True, **overrides):
    model, tok = (model, H.tiny_model()[1]) if model is not None else H.tiny_model()
    kw = H.config_kwargs(output_dir=str(tmp_path / f"{method}-{shared}"), shared_prefix=shared, **overrides)
    if method == "grpo-joint":  # F-GRPO == GRPO when both phase rewards are the same reward
        args = SharedPrefixGRPOConfig(scale_rewards="none", **kw)
        return SharedPrefixGRPOTrainer(model=model, reward_funcs=[H.joint], args=args, train_dataset=H.dataset(),
                                       processing_class=tok, rollout_func=H.fixed_rollouts(tok))
    peft = kw.pop("peft_config", None)
    return make_trainer(method, model, tok, H.dataset(), [H.coverage, H.utility], phase_lambda=0.5, peft_config=peft,
                        rollout_func=H.fixed_rollouts(tok) if fixed_rollouts else None, **kw)


def assert_close_dicts(a, b, **tol):
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, **tol)


# steps_per_generation=2: TRL shuffles the generation batch and splits it in two, so a step's
# rows are not grouped by prompt, and old log-probs are computed (in chunks of 8 rows).
STEP = dict(steps_per_generation=2, temperature=0.7)


@pytest.mark.parametrize("method", ["fgrpo", "grpo"])
def test_switch_on_equals_switch_off(method, tmp_path, shared_calls):
    model = H.tiny_model()[0]
    on = build(method, True, tmp_path, copy.deepcopy(model), **STEP)
    off = build(method, False, tmp_path, copy.deepcopy(model), **STEP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_loss, on_grads, on_inputs = H.loss_and_grads(on)
    assert not [w for w in caught if FALLBACK in str(w.message)]
    assert True in shared_calls and False in shared_calls  # the loss's forward and the old log-probs
    n_shared = len(shared_calls)
    off_loss, off_grads, off_inputs = H.loss_and_grads(off)
    assert len(shared_calls) == n_shared  # off: TRL's forward only
    assert off_inputs["old_per_token_logps"] is not None
    torch.testing.assert_close(on_inputs["old_per_token_logps"], off_inputs["old_per_token_logps"],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on_loss, off_loss, atol=1e-6, rtol=1e-5)
    assert sum(g.norm() for g in off_grads.values()) > 0
    assert_close_dicts(on_grads, off_grads, atol=1e-5, rtol=1e-4)

    on = build(method, True, tmp_path, copy.deepcopy(model), max_steps=4, **STEP)
    off = build(method, False, tmp_path, copy.deepcopy(model), max_steps=4, **STEP)
    on_params, off_params, start = H.trained_params(on), H.trained_params(off), dict(model.named_parameters())
    assert any(not torch.equal(off_params[n], start[n]) for n in off_params)  # training moved something
    # Adam divides by sqrt(v): on a coordinate whose gradient is ~0, rounding noise becomes a step
    # of up to lr. After 4 steps of lr 1e-2 (weights moved ~2.5e-2) a few coordinates differ by
    # ~6e-5; a wrong forward would differ by the movement itself.
    assert_close_dicts(on_params, off_params, atol=2e-4, rtol=0)
    on_losses = [r["loss"] for r in on.state.log_history if "loss" in r]
    off_losses = [r["loss"] for r in off.state.log_history if "loss" in r]
    assert len(on_losses) == 4 and on_losses == pytest.approx(off_losses, abs=1e-6, rel=1e-5)


def test_switch_on_with_lora_and_reference_from_disabled_adapter(tmp_path, shared_calls):
    # beta > 0 with LoRA: TRL's reference log-probs come from the same model, adapter disabled.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = H.tiny_model()[0]
    on = build("fgrpo", True, tmp_path, copy.deepcopy(model), beta=0.1, peft_config=lora, **STEP)
    off = build("fgrpo", False, tmp_path, copy.deepcopy(model), beta=0.1, peft_config=lora, **STEP)
    for trainer in (on, off):  # LoRA B starts at zero, which would make policy == reference
        torch.manual_seed(0)
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3)
    on_loss, on_grads, on_inputs = H.loss_and_grads(on)
    off_loss, off_grads, off_inputs = H.loss_and_grads(off)
    assert len(shared_calls) >= 3  # loss, old and reference log-probs
    ref, old = off_inputs["ref_per_token_logps"], off_inputs["old_per_token_logps"]
    assert not torch.allclose(ref, old)  # the reference really is the adapter-free model
    torch.testing.assert_close(on_inputs["ref_per_token_logps"], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on_loss, off_loss, atol=1e-6, rtol=1e-5)
    assert_close_dicts(on_grads, off_grads, atol=1e-5, rtol=1e-4)


def test_fgrpo_equals_grpo_exactly_with_the_switch_on(tmp_path, shared_calls):
    model = H.tiny_model()[0]
    kw = dict(steps_per_generation=2, loss_type="dr_grpo")
    grpo = build("grpo-joint", True, tmp_path, copy.deepcopy(model), **kw)
    args = FGRPOConfig(**H.config_kwargs(output_dir=str(tmp_path / "f"), shared_prefix=True, **kw))
    tok = H.tiny_model()[1]
    fgrpo = FGRPOTrainer(model=copy.deepcopy(model), reward_funcs=[H.joint, H.joint], args=args,
                         train_dataset=H.dataset(), processing_class=tok, rollout_func=H.fixed_rollouts(tok))
    g_loss, g_grads, _ = H.loss_and_grads(grpo)
    f_loss, f_grads, _ = H.loss_and_grads(fgrpo)
    assert shared_calls
    torch.testing.assert_close(f_loss, g_loss, rtol=0, atol=0)
    assert_close_dicts(f_grads, g_grads, rtol=0, atol=0)


# ---------------------------------------------------------------- fallbacks


def test_fallback_under_gradient_checkpointing_warns_once_and_is_trl(tmp_path, shared_calls):
    model = H.tiny_model()[0]
    on = build("fgrpo", True, tmp_path, copy.deepcopy(model), activation_checkpointing=True, **STEP)
    off = build("fgrpo", False, tmp_path, copy.deepcopy(model), activation_checkpointing=True, **STEP)
    for trainer in (on, off):  # what `train()` does with activation_checkpointing=True
        trainer.model.activation_checkpointing_enable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_loss, on_grads, inputs = H.loss_and_grads(on)
        H.loss_and_grads(on)
    fallbacks = [str(w.message) for w in caught if FALLBACK in str(w.message)]
    assert len(fallbacks) == 1 and "gradient checkpointing" in fallbacks[0] and "\n" not in fallbacks[0]
    assert True not in shared_calls and False in shared_calls  # old log-probs: TRL lifts checkpointing
    off_loss, off_grads, _ = H.loss_and_grads(off)
    torch.testing.assert_close(on_loss, off_loss, atol=1e-6, rtol=1e-5)  # old log-probs came from either path
    assert_close_dicts(on_grads, off_grads, atol=1e-5, rtol=1e-4)
    # the loss's forward itself is TRL's, bit for bit
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    T = inputs["completion_ids"].size(1)
    fell_back = on._get_per_token_logps_and_entropies(on.model, ids, mask, T, compute_entropy=True)
    trl = GRPOTrainer._get_per_token_logps_and_entropies(on, on.model, ids, mask, T, compute_entropy=True)
    torch.testing.assert_close(fell_back[0], trl[0], rtol=0, atol=0)
    torch.testing.assert_close(fell_back[1], trl[1], rtol=0, atol=0)


def test_blocker_reasons(tmp_path):
    trainer = build("grpo", True, tmp_path)
    model = trainer.model
    assert SP.trainer_blocker(trainer, model, 10, 4, False, {"pixel_values": None}) is None
    assert "multimodal" in SP.trainer_blocker(trainer, model, 10, 4, False, {"token_type_ids": torch.zeros(1)})
    assert "MoE" in SP.trainer_blocker(trainer, model, 10, 4, True, {})
    assert "no prompt" in SP.trainer_blocker(trainer, model, 4, 4, False, {})
    assert "DataParallel" in SP.trainer_blocker(trainer, torch.nn.DataParallel(model), 10, 4, False, {})


def test_multimodal_call_goes_to_trl_with_a_warning(tmp_path, monkeypatch, shared_calls):
    trainer = build("grpo", True, tmp_path)
    seen = {}

    def trl_method(self, model, input_ids, attention_mask, logits_to_keep, **kwargs):
        seen.update(kwargs)
        return "trl"

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", trl_method)
    ids = torch.ones(4, 6, dtype=torch.long)
    with pytest.warns(UserWarning, match="multimodal inputs \\(image_sizes\\)"):
        out = trainer._get_per_token_logps_and_entropies(trainer.model, ids, torch.ones_like(ids), 3,
                                                         image_sizes=torch.ones(4, 2))
    assert out == "trl" and "image_sizes" in seen and not shared_calls


# ---------------------------------------------------------------- grouping and chunking


def test_distinct_prompts_by_equality_not_position():
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])  # row 3: 0 is a real token
    firsts, row_prompt = SP.distinct_prompts(ids, mask)
    assert len(firsts) == 3
    assert torch.equal(ids[firsts][row_prompt], ids) and torch.equal(mask[firsts][row_prompt], mask)
    assert row_prompt[0] == row_prompt[2] != row_prompt[3] and row_prompt[1] == row_prompt[4]
    assert firsts[row_prompt].tolist() == [0, 1, 0, 3, 1]  # the first row of each prompt


@pytest.mark.parametrize("batch_size", [None, 2, 3, 4, 5, 100])
def test_group_chunks_keep_groups_whole_within_the_cap(batch_size):
    row_prompt = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 0, 2, 2])  # sizes 4, 2, 5; shuffled
    chunks = SP.group_chunks(row_prompt, batch_size)
    assert sorted(torch.cat(chunks).tolist()) == list(range(11))
    cap = batch_size or 11
    assert all(len(c) <= cap for c in chunks)
    spans = {g: sum(bool((row_prompt[c] == g).any()) for c in chunks) for g in range(3)}
    sizes = torch.bincount(row_prompt).tolist()
    for g, size in enumerate(sizes):  # a group is split only when it alone exceeds the cap
        assert spans[g] == (1 if size <= cap else -(-size // cap))


def test_chunked_shuffled_rows_match_trl(tmp_path, shared_calls):
    """TRL's method with `batch_size` chunks, rows of groups scattered: same log-probs/entropies."""
    trainer = build("fgrpo", True, tmp_path, temperature=0.7)
    model = trainer.model
    g = torch.Generator().manual_seed(0)
    vocab, P, T = model.config.vocab_size, 7, 5
    prompts = torch.randint(4, vocab, (3, P), generator=g).repeat_interleave(4, 0)
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[:4, :3] = 0  # left padding on the first group
    completions = torch.randint(4, vocab, (12, T), generator=g)
    completion_mask = (torch.arange(T)[None] < torch.randint(1, T + 1, (12, 1), generator=g)).long()
    perm = torch.randperm(12, generator=g)
    ids = torch.cat([prompts, completions], 1)[perm]
    mask = torch.cat([prompt_mask, completion_mask], 1)[perm]
    model.train()
    shared = trainer._get_per_token_logps_and_entropies(model, ids, mask, T, batch_size=5, compute_entropy=True)
    assert len(shared_calls) >= 3  # three chunks
    trainer.args.shared_prefix = False
    plain = trainer._get_per_token_logps_and_entropies(model, ids, mask, T, batch_size=5, compute_entropy=True)
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=1e-5)
    assert shared[2] is None and (shared[0][mask[:, P:] == 0] == 0).all()
    grads = [torch.autograd.grad((out[0] * torch.linspace(-1, 1, 12 * T).view(12, T)).sum(), model.parameters())
             for out in (shared, plain)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- make_trainer


def test_make_trainer_turns_it_on_for_both_methods(tmp_path):
    _, tok = H.tiny_model()
    kw = H.config_kwargs(output_dir=str(tmp_path))
    built = {(m, pm): make_trainer(m, H.tiny_model()[0], tok, H.dataset(), [H.coverage, H.utility],
                                   phase_metrics=pm, **kw)
             for m, pm in (("fgrpo", True), ("grpo", True), ("grpo", False))}
    assert all(t.args.shared_prefix for t in built.values())
    assert type(built["fgrpo", True]) is FGRPOTrainer and type(built["grpo", True]) is GRPOPhaseMetricsTrainer
    assert type(built["grpo", False]) is SharedPrefixGRPOTrainer
    off = make_trainer("grpo", H.tiny_model()[0], tok, H.dataset(), [H.coverage, H.utility], phase_metrics=False,
                       **{**kw, "shared_prefix": False})
    assert type(off) is GRPOTrainer and not off.args.shared_prefix
    assert FGRPOConfig(**H.config_kwargs(output_dir=str(tmp_path))).shared_prefix is False  # by hand: TRL's


# ---------------------------------------------------------------- generation


@pytest.fixture
def prefills(monkeypatch):
    """Counts `generate` calls that got a shared prefill."""
    calls = []
    real = SP._prefill

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out[1] is not None)
        return out

    monkeypatch.setattr(SP, "_prefill", counting)
    return calls


def left_padded_groups(tok, vocab, lengths=(9, 5), G=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = max(lengths)
    ids = torch.full((len(lengths) * G, P), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i * G:(i + 1) * G, P - n:] = torch.randint(4, vocab, (n,), generator=g)
        mask[i * G:(i + 1) * G, P - n:] = 1
    return ids, mask


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_prefilled_generate_gives_generates_tokens_and_logits(sample, prefills):
    model, tok = H.tiny_model()
    ids, mask = left_padded_groups(tok, model.config.vocab_size)
    config = GenerationConfig(do_sample=sample, max_new_tokens=10, min_new_tokens=10, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        torch.manual_seed(1)
        with fast_multinomial():  # the sampler prefilled_generate uses: the comparison is about the prefill
            plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        torch.manual_seed(1)
        shared = SP.prefilled_generate(model.generate, model, ids, mask, generation_config=config)
    assert prefills == [True]
    assert torch.equal(shared.sequences, plain.sequences)
    assert len(set(map(tuple, plain.sequences[:, -10:].tolist()))) > 1
    # logits, not only tokens: prefilling with positions other than generate's own (arange
    # instead of cumsum(mask) - 1 on left-padded rows) moves them by ~1e-3 yet keeps the tokens
    for a, b in zip(shared.logits, plain.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_prefilled_generate_falls_back_for_beam_search(prefills):
    model, tok = H.tiny_model()
    ids, mask = left_padded_groups(tok, model.config.vocab_size)
    config = GenerationConfig(num_beams=2, max_new_tokens=4, pad_token_id=tok.pad_token_id)
    with torch.no_grad(), pytest.warns(UserWarning, match="generation: beam search"):
        shared = SP.prefilled_generate(model.generate, model, ids, mask, generation_config=config)
    assert torch.equal(shared, model.generate(input_ids=ids, attention_mask=mask, generation_config=config))


def test_trainer_samples_the_same_completions_on_and_off(tmp_path, prefills):
    model = H.tiny_model()[0]
    on = build("fgrpo", True, tmp_path, copy.deepcopy(model), fixed_rollouts=False, temperature=0.7)
    off = build("fgrpo", False, tmp_path, copy.deepcopy(model), fixed_rollouts=False, temperature=0.7)
    outputs = []
    for trainer in (on, off):
        trainer.model.train()
        batch = next(iter(trainer.get_train_dataloader()))
        torch.manual_seed(3)
        with fast_multinomial() if trainer is off else nullcontext():  # on samples with it by itself
            outputs.append(trainer._generate_and_score_completions(batch))
    assert prefills == [True]  # on: prefilled; off: TRL's generate untouched
    assert torch.multinomial is TORCH_MULTINOMIAL  # and torch's sampler is back after the call
    assert "generate" not in vars(on.model)  # the patch is gone after the call
    assert torch.equal(outputs[0]["completion_ids"], outputs[1]["completion_ids"])
    assert outputs[0]["completion_ids"].size(1) > 1
