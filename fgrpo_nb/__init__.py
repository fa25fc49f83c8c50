"""F-GRPO notebooks: factorised group-relative policy optimisation for slate-then-rank rollouts.

Modules (each small, pure where possible, and tested):
- episodes: the `Episode` shape shared by every task, JSONL I/O
- data: MovieLens / LastFM / HotpotQA / MuSiQue episode builders
- prompts: rendering an episode as a prompt (tiny ID model or chat LLM)
- rollout: the `<SLATE> ... </SLATE> <RANK> ... </RANK>` grammar: render and parse
- rewards: coverage (slate) and utility (ranking) rewards, TRL reward adapters
- metrics: trec_eval-style ranking metrics and per-query outcomes
- models: one loader for the tiny ID model, SmolLM2-135M and hub models
- trainer: FGRPOTrainer, a subclass of TRL's GRPOTrainer
"""

__version__ = "0.1.0"
