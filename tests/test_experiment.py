"""Pure parts of the experiment runner: SFT targets, vocabulary, resumability guard."""

import dataclasses
import json
import random

import pytest

from fgrpo_nb.episodes import Candidate, Episode
from fgrpo_nb.experiment import ExperimentConfig, SFT_FIELDS, mark_done, reuse_if_done, sft_records, tiny_vocab
from fgrpo_nb.rollout import parse_rollout
from fgrpo_nb.teachers import teacher_rollout_ids


def _episode(pool=("i1", "i2", "i3", "i4", "i5", "i6"), relevant=("i4",)):
    return Episode("u1@3", "rec", "toy", "train", "A | B", tuple(Candidate(c, c.upper()) for c in pool),
                   tuple(relevant), history=("i9", "i8"))


def test_teacher_target_slate_holds_relevant_then_filler_and_ranks_relevant_first():
    ep = _episode()
    order = ["i1", "i2", "i4", "i3", "i5", "i6"]  # teacher: i1 most popular
    slate, ranking = teacher_rollout_ids(ep, order, n=3, k=2, rng=random.Random(0), slate_order="pool")
    assert slate == ["i1", "i2", "i4"]  # relevant + 2 best filler, listed in pool order
    assert ranking == ["i4", "i1"]  # relevant first, then filler in teacher order
    shuffled, _ = teacher_rollout_ids(ep, order, n=3, k=2, rng=random.Random(1), slate_order="shuffled")
    assert sorted(shuffled) == sorted(slate)
    with pytest.raises(ValueError, match="pool"):
        teacher_rollout_ids(ep, order, n=3, k=2, rng=random.Random(0), slate_order="sorted")


def test_sft_records_are_valid_rollouts_in_label_space():
    ep = _episode()
    cfg = ExperimentConfig(n=3, k=2, style="slots")
    row = sft_records([ep], lambda e: e.pool_ids, cfg, seed=0)[0]
    assert row["completion"].startswith(" <SLATE>")  # a space keeps words apart when TRL concatenates
    rollout = parse_rollout(row["completion"], [f"c{i}" for i in range(1, 7)], n=3, k=2)
    assert rollout.valid and rollout.ranking[0] == "c4"  # i4 sits in slot 4


def test_tiny_vocab_covers_slot_labels_history_and_pool():
    vocab = tiny_vocab([_episode()])
    assert {"c1", "c6", "i9", "i1", "<HIST>", "<POOL>", "<OUT>"} <= set(vocab)


def test_reuse_if_done_refuses_a_unit_made_with_other_parameters(tmp_path):
    cfg = ExperimentConfig()
    assert not reuse_if_done(tmp_path, cfg)
    mark_done(tmp_path, config={**cfg.__dict__})
    assert reuse_if_done(tmp_path, cfg)
    # an RL-only change leaves the SFT checkpoint reusable, but not the RL unit
    rl_change = ExperimentConfig(lr=1e-5)
    assert reuse_if_done(tmp_path, rl_change, SFT_FIELDS)
    with pytest.raises(ValueError, match="other parameters"):
        reuse_if_done(tmp_path, rl_change)
    assert json.loads((tmp_path / "done.json").read_text())["config"]["lr"] == cfg.lr


def test_teacher_ranking_filler_in_pool_order():
    ep = _episode()
    order = ["i5", "i1", "i4", "i3", "i2", "i6"]  # teacher: i5 most popular
    slate, ranking = teacher_rollout_ids(ep, order, n=4, k=3, rng=random.Random(0), slate_order="pool",
                                         rank_filler="pool")
    assert slate == ["i1", "i3", "i4", "i5"]
    assert ranking == ["i4", "i1", "i3"]  # relevant first, then filler by pool position, not popularity
    _, by_teacher = teacher_rollout_ids(ep, order, n=4, k=3, rng=random.Random(0), slate_order="pool")
    assert by_teacher == ["i4", "i5", "i1"]
    with pytest.raises(ValueError, match="rank_filler"):
        teacher_rollout_ids(ep, order, n=4, k=3, rng=random.Random(0), rank_filler="popular")


def test_popularity_features_reach_prompt_and_vocabulary():
    from fgrpo_nb.data import build_episodes, popularity_words
    from fgrpo_nb.experiment import candidate_features, episode_prompt
    from fgrpo_nb.prompts import FEATURE_WORDS

    ep = build_episodes("ml-100k", n_train=1, n_val=1, n_test=1)["test"][0]
    words = episode_prompt(ep, ExperimentConfig(style="slots", item_features="popularity")).split(" ")
    pool = words[words.index("<POOL>") + 1 : -1]
    assert pool[1::3] == ep.pool_ids and pool[2::3] == [popularity_words("ml-100k")[c] for c in ep.pool_ids]
    assert set(FEATURE_WORDS) <= set(tiny_vocab([ep]))
    assert candidate_features(ep, "none") is None
    with pytest.raises(ValueError, match="item_features must be one of none, popularity"):
        candidate_features(ep, "genre")
    with pytest.raises(ValueError, match="recommendation"):
        candidate_features(dataclasses.replace(_episode(), task="qa"), "popularity")


def test_sft_scoring_completion_positions_only_keeps_loss_and_gradients(tmp_path):
    """`completion_positions_only` changes which positions TRL's fused LM head scores on CPU,
    not the loss: the same batch gives the same loss, gradients and token accuracy."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    import trl.trainer.utils as trl_utils

    import fgrpo_helpers as H
    from fgrpo_nb.experiment import completion_positions_only

    model, tok = H.tiny_model()
    rows = Dataset.from_dict({"prompt": ["Q: u1 u2", "Q: u3"], "completion": [" <SLATE> i1 i2", " <SLATE> i3"]})
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, report_to=[], max_length=None, bf16=False,
                     gradient_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).float().mean() > 0.3  # the prompt's positions: what is skipped
    results = []
    for block in (completion_positions_only, None):
        model.zero_grad()
        if block:
            with block():
                assert trl_utils._use_triton(torch.device("cpu"))  # the compact path is the one taken
                loss = trainer.compute_loss(model, dict(batch))
        else:
            loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None],
                        trainer._metrics["train"]["mean_token_accuracy"][-1]))
    (loss_a, grads_a, acc_a), (loss_b, grads_b, acc_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-6)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert acc_a == acc_b
    assert not trl_utils._use_triton(torch.device("cpu"))  # restored after the block


@pytest.mark.parametrize("style", ["slots", "ids"])
def test_full_rollout_budget_is_the_sft_targets_token_count_and_a_shorter_one_is_refused(style):
    from fgrpo_nb.experiment import full_rollout_tokens
    from fgrpo_nb.models import build_word_tokenizer

    ep = _episode()
    tokenizer = build_word_tokenizer(tiny_vocab([ep]))
    for n, k in [(3, 2), (5, 5), (6, 1)]:
        completion = sft_records([ep], lambda e: e.pool_ids, ExperimentConfig(n=n, k=k, style=style), seed=0)[0]
        ids = tokenizer(completion["completion"], add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert len(ids) + 1 == full_rollout_tokens(n, k)  # + the end token TRL appends to SFT targets
    assert full_rollout_tokens(15, 5) == 25  # the cpu profile's largest slate-size sweep value
    with pytest.raises(ValueError, match="needs 25 tokens"):
        ExperimentConfig(n=15, k=5, style=style, max_completion_length=24)
    ExperimentConfig(n=15, k=5, style="chat", max_completion_length=24)  # subword tokens: not counted
