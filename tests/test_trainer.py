"""FGRPOTrainer: equivalence with TRL's GRPO, per-token routing, edge cases, LoRA."""

import copy
import math

import pytest
import torch
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

import fgrpo_helpers as H
from fgrpo_nb.advantages import conflict_counts, group_advantages, phase_conflict_counts, phase_advantages_per_func, route_advantages
from fgrpo_nb.trainer import (
    TOKEN_LEVEL_LOSSES, FGRPOConfig, FGRPOTrainer, GRPOPhaseMetricsTrainer, SharedPrefixGRPOTrainer, make_trainer,
    slate_mask_from_counts, slate_token_counts,
)

PHASE_METRICS = ("phase/reward_gen_mean", "phase/reward_rank_mean", "phase/adv_gen_abs_mean", "phase/adv_gen_std",
                 "phase/adv_rank_abs_mean", "phase/adv_rank_std", "phase/conflict_rate", "phase/conflict_rate_gen", "phase/conflict_rate_rank")


def test_token_level_losses_match_trl_source():
    # If TRL adds or renames a loss type, this list (and the equivalence test) must be revisited.
    import inspect

    from trl.trainer import grpo_trainer

    source = inspect.getsource(grpo_trainer.GRPOTrainer._compute_loss)
    for loss in (*TOKEN_LEVEL_LOSSES, "luspo", "vespo"):
        assert f'"{loss}"' in source


# ---------------------------------------------------------------- equivalence with GRPO


def _trainer(cls, config_cls, reward_funcs, model, tokenizer, tmp_path, **overrides):
    args = config_cls(**H.config_kwargs(output_dir=str(tmp_path), **overrides))
    return cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=H.dataset(),
               processing_class=tokenizer, rollout_func=H.fixed_rollouts(tokenizer))


def _pair(loss_type, tmp_path, **overrides):
    model, tok = H.tiny_model()
    kw = dict(loss_type=loss_type, **overrides)
    grpo = _trainer(GRPOTrainer, GRPOConfig, [H.joint], copy.deepcopy(model), tok, tmp_path / "g",
                    scale_rewards="none", **kw)
    fgrpo = _trainer(FGRPOTrainer, FGRPOConfig, [H.joint, H.joint], copy.deepcopy(model), tok, tmp_path / "f",
                     phase_lambda=1.0, phase_scale="none", **kw)
    return grpo, fgrpo


@pytest.mark.parametrize("loss_type", TOKEN_LEVEL_LOSSES)
def test_equivalent_to_grpo_when_both_phase_rewards_are_the_same(loss_type, tmp_path):
    # steps_per_generation=2 exercises TRL's buffer (shuffle, split) and a ratio != 1 on the
    # second step, so clipping paths are live too.
    grpo, fgrpo = _pair(loss_type, tmp_path, steps_per_generation=2)
    g_loss, g_grads, g_inputs = H.loss_and_grads(grpo)
    f_loss, f_grads, f_inputs = H.loss_and_grads(fgrpo)
    assert f_inputs["advantages"].dim() == 2 and g_inputs["advantages"].dim() == 1
    valid = f_inputs["completion_mask"].bool()
    expected = g_inputs["advantages"].unsqueeze(1).expand_as(f_inputs["advantages"])
    torch.testing.assert_close(f_inputs["advantages"][valid], expected[valid], rtol=0, atol=0)
    torch.testing.assert_close(f_loss, g_loss, rtol=0, atol=0)
    assert g_grads.keys() == f_grads.keys() and sum(g.norm() for g in g_grads.values()) > 0
    for name in g_grads:
        torch.testing.assert_close(f_grads[name], g_grads[name], rtol=0, atol=0, msg=name)

    grpo, fgrpo = _pair(loss_type, tmp_path, steps_per_generation=2, max_steps=4)
    g_params, f_params = H.trained_params(grpo), H.trained_params(fgrpo)
    for name in g_params:
        torch.testing.assert_close(f_params[name], g_params[name], rtol=0, atol=0, msg=name)
    g_losses = [r["loss"] for r in grpo.state.log_history if "loss" in r]
    f_losses = [r["loss"] for r in fgrpo.state.log_history if "loss" in r]
    assert len(g_losses) == 4 and f_losses == g_losses


def test_equivalent_to_grpo_with_std_scaling(tmp_path):
    grpo, fgrpo = _pair("grpo", tmp_path)
    grpo.scale_rewards = "group"
    fgrpo.phase_scale = "group"
    g_loss, g_grads, _ = H.loss_and_grads(grpo)
    f_loss, f_grads, _ = H.loss_and_grads(fgrpo)
    torch.testing.assert_close(f_loss, g_loss, rtol=0, atol=0)
    for name in g_grads:
        torch.testing.assert_close(f_grads[name], g_grads[name], rtol=0, atol=0)


def test_the_comparison_can_fail_when_phase_rewards_differ(tmp_path):
    # Guards the equivalence test against passing vacuously (e.g. if advantages were ignored).
    model, tok = H.tiny_model()
    grpo = _trainer(GRPOTrainer, GRPOConfig, [H.coverage, H.utility], copy.deepcopy(model), tok, tmp_path / "g",
                    scale_rewards="none", loss_type="dr_grpo")
    fgrpo = _trainer(FGRPOTrainer, FGRPOConfig, [H.coverage, H.utility], copy.deepcopy(model), tok, tmp_path / "f",
                     loss_type="dr_grpo")
    g_loss, g_grads, _ = H.loss_and_grads(grpo)
    f_loss, f_grads, _ = H.loss_and_grads(fgrpo)
    assert any(not torch.allclose(f_grads[n], g_grads[n]) for n in g_grads)


def test_mean_only_grpo_advantage_is_the_sum_of_phase_advantages():
    # Why GRPO = F-GRPO + cross terms: with mean-only scaling the joint advantage is additive.
    rewards = torch.tensor([[1.0, 0.2], [0.0, 0.0], [0.5, 1.0], [0.5, 0.3]])
    lam = 0.5
    a_gen, a_rank = phase_advantages_per_func(rewards, 4)
    joint = group_advantages(rewards[:, 0] + lam * rewards[:, 1], 4)
    torch.testing.assert_close(joint, a_gen + lam * a_rank)


# ---------------------------------------------------------------- routing


def test_every_token_carries_its_own_phase_advantage(tmp_path):
    _, tok = H.tiny_model()
    lam = 0.5
    trainer = _trainer(FGRPOTrainer, FGRPOConfig, [H.coverage, H.utility], H.tiny_model()[0], tok, tmp_path,
                       phase_lambda=lam)
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)

    completions = tok.batch_decode(out["completion_ids"], skip_special_tokens=True)
    relevant = [x["relevant"] for x in batch]
    r_gen = torch.tensor(H.coverage(completions, relevant))
    r_rank = torch.tensor(H.utility(completions, relevant))
    a_gen = r_gen - r_gen.view(-1, 4).mean(1).repeat_interleave(4)
    a_rank = r_rank - r_rank.view(-1, 4).mean(1).repeat_interleave(4)
    assert a_gen.abs().sum() > 0 and a_rank.abs().sum() > 0  # the batch must test something

    for i, ids in enumerate(out["completion_ids"].tolist()):
        n_tokens = int(out["completion_mask"][i].sum())
        words = tok.convert_ids_to_tokens(ids[:n_tokens])
        in_slate = True
        for t, word in enumerate(words):
            expected = a_gen[i] if in_slate else lam * a_rank[i]
            assert out["advantages"][i, t].item() == pytest.approx(expected.item(), abs=1e-6), (i, t, words)
            if word == "</SLATE>":
                in_slate = False
        if "</SLATE>" not in words:
            assert torch.all(out["advantages"][i, :n_tokens] == a_gen[i])


def test_route_advantages_on_a_hand_made_batch():
    a_gen, a_rank = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 3.0])
    mask = slate_mask_from_counts([2, None], width=4)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    adv = route_advantages(a_gen, a_rank, mask, 0.5)
    assert adv.tolist() == [[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]
    adv = route_advantages(torch.tensor([1.0, 0.0]), torch.tensor([-4.0, 2.0]), mask, 0.5)
    assert adv.tolist() == [[1.0, 1.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0]]


def test_slate_split_with_a_tag_spread_over_many_tokens():
    # A character-level "tokenizer": `</SLATE>` spans 8 tokens; the slate ends with the last.
    text = "<SLATE> a b </SLATE> <RANK> b </RANK>"
    ids = [ord(c) for c in text]
    decode = lambda lists: ["".join(map(chr, x)) for x in lists]  # noqa: E731
    end = text.index("</SLATE>") + len("</SLATE>")
    assert slate_token_counts([ids, ids[:end], ids[: end - 1], []], decode) == [end, end, None, None]


def test_slate_split_with_the_tiny_tokenizer():
    _, tok = H.tiny_model()
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in H.ROLLOUTS]
    counts = slate_token_counts(rows, lambda x: tok.batch_decode(x, skip_special_tokens=True))
    expected = [t.split().index("</SLATE>") + 1 if "</SLATE>" in t else None for t in H.ROLLOUTS]
    assert counts == expected


def test_conflict_counts():
    a_gen, a_rank = torch.tensor([1.0, -1.0]), torch.tensor([-3.0, 0.0])
    mask = slate_mask_from_counts([1, 1], width=3)
    token_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # row 0: joint = -2; slate token (+1) conflicts, ranking tokens (-3) agree.
    # row 1: joint = -1; slate token (-1) agrees, ranking token has zero own advantage: no conflict.
    conflicts, tokens = conflict_counts(a_gen, a_rank, mask, token_mask, 1.0)
    assert (conflicts.item(), tokens.item()) == (1.0, 5.0)
    # per phase: [slate conflicts, rank conflicts, slate tokens, rank tokens]
    assert phase_conflict_counts(a_gen, a_rank, mask, token_mask, 1.0).tolist() == [1.0, 0.0, 2.0, 3.0]


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("scale", ["none", "group"])
def test_equal_rewards_in_a_group_give_zero_advantage_and_no_nan(scale):
    rewards = torch.tensor([[0.7, 0.0]] * 4 + [[1.0, 0.5], [0.0, 0.5], [0.0, 0.5], [1.0, 0.5]])
    a_gen, a_rank = phase_advantages_per_func(rewards, 4, scale)
    assert torch.isfinite(a_gen).all() and torch.isfinite(a_rank).all()
    assert a_gen[:4].tolist() == [0.0] * 4 and a_rank.tolist() == [0.0] * 8
    assert a_gen[4:].abs().min() > 0


@pytest.mark.parametrize("scale", ["none", "group"])
def test_constant_group_is_exactly_zero_despite_rounding(scale):
    # float32 mean of eight 0.3s is off by 3e-8; TRL would pass that on (x 1e4 with std scaling).
    rewards = torch.tensor([0.3] * 8 + [0.3, math.nan] * 4)
    assert group_advantages(rewards, 8, scale).tolist() == [0.0] * 16


def test_unscorable_reward_gives_zero_advantage():
    rewards = torch.tensor([1.0, math.nan, 0.0, 0.5])
    adv = group_advantages(rewards, 4)
    assert adv.tolist() == [0.5, 0.0, -0.5, 0.0]


def test_two_d_advantages_survive_trl_buffer_shuffle_and_split():
    batch = {"advantages": torch.arange(12.0).view(4, 3), "completion_ids": torch.arange(12).view(4, 3),
             "num_items_in_batch": torch.tensor(12)}
    shuffled = shuffle_sequence_dict(batch)
    assert torch.equal(shuffled["advantages"].long(), shuffled["completion_ids"])  # rows move together
    chunks = split_tensor_dict(shuffled, 2)
    assert [c["advantages"].shape for c in chunks] == [(2, 3), (2, 3)]
    assert torch.equal(torch.cat([c["advantages"] for c in chunks]), shuffled["advantages"])


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("overrides", [dict(loss_type="luspo", importance_sampling_level="sequence"),
                                       dict(loss_type="vespo"),
                                       dict(loss_type="grpo", importance_sampling_level="sequence")])
def test_sequence_level_losses_are_rejected(overrides, tmp_path):
    model, tok = H.tiny_model()
    with pytest.raises(ValueError, match="grpo, dr_grpo, dapo, bnpo, cispo, sapo"):
        _trainer(FGRPOTrainer, FGRPOConfig, [H.coverage, H.utility], model, tok, tmp_path, **overrides)


def test_exactly_two_reward_functions(tmp_path):
    model, tok = H.tiny_model()
    with pytest.raises(ValueError, match="exactly two reward functions"):
        _trainer(FGRPOTrainer, FGRPOConfig, [H.coverage], model, tok, tmp_path)


def test_bad_phase_scale_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="phase_scale"):
        FGRPOConfig(**H.config_kwargs(output_dir=str(tmp_path), phase_scale="batch"))


# ---------------------------------------------------------------- real generation


def test_lora_fgrpo_step_with_real_generation_logs_phase_metrics(tmp_path):
    model, tok = H.tiny_model()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = make_trainer("fgrpo", model, tok, H.dataset(), [H.coverage, H.utility], phase_lambda=0.5,
                           peft_config=lora, **H.config_kwargs(output_dir=str(tmp_path), max_steps=3))
    # three steps: a step moves the adapters only when a phase has a nonzero advantage on tokens it
    # owns, and the random tiny model's first batches (seeded, so always the same) have none
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # lora_B starts at 0 and moved
    logged = trainer.state.log_history[0]
    for key in PHASE_METRICS:
        assert key in logged and math.isfinite(logged[key])


def test_make_trainer_grpo_is_trl_grpo_with_joint_reward(tmp_path):
    model, tok = H.tiny_model()
    trainer = make_trainer("grpo", model, tok, H.dataset(), [H.coverage, H.utility], phase_lambda=0.5,
                           **H.config_kwargs(output_dir=str(tmp_path), max_steps=1))
    assert isinstance(trainer, GRPOPhaseMetricsTrainer) and not isinstance(trainer, FGRPOTrainer)
    assert trainer.reward_weights.tolist() == [1.0, 0.5] and trainer.scale_rewards == "none"
    trainer.train()
    assert "phase/conflict_rate" in trainer.state.log_history[0]
    bare = make_trainer("grpo", *H.tiny_model(), H.dataset(), [H.coverage, H.utility], phase_metrics=False,
                        **H.config_kwargs(output_dir=str(tmp_path)))
    assert type(bare) is SharedPrefixGRPOTrainer  # TRL's GRPO, only the forward shared (make_trainer's default)
