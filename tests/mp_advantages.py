"""Write this process's F-GRPO advantages for two generation batches to OUT/rank{r}.pt.

Run alone (one process) or under `accelerate launch --num_processes 2 --cpu`;
tests/test_trainer_multiprocess.py compares the two. The global batch is one group of
8 completions, so with two processes every group is split across them.
usage: python tests/mp_advantages.py OUT PER_DEVICE_BATCH
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import fgrpo_helpers as H  # noqa: E402
from fgrpo_nb.trainer import FGRPOConfig, FGRPOTrainer  # noqa: E402


def main(out: Path, per_device: int) -> None:
    model, tok = H.tiny_model()
    args = FGRPOConfig(**H.config_kwargs(output_dir=str(out / "trainer"), per_device_train_batch_size=per_device,
                                         num_generations=8, steps_per_generation=1, phase_lambda=0.5))
    trainer = FGRPOTrainer(model=model, reward_funcs=[H.coverage, H.utility], args=args,
                           train_dataset=H.dataset(), processing_class=tok, rollout_func=H.fixed_rollouts(tok))
    trainer.model.train()
    batches = iter(trainer.get_train_dataloader())
    rows = []
    for _ in range(2):
        batch = next(batches)
        output = trainer._generate_and_score_completions(batch)
        for prompt, ids, mask, adv in zip([x["prompt"] for x in batch], output["completion_ids"],
                                          output["completion_mask"], output["advantages"]):
            n = int(mask.sum())
            rows.append({"prompt": prompt, "ids": ids[:n].tolist(), "advantages": adv[:n].tolist()})
    metrics = {k: v for k, v in trainer._metrics["train"].items() if k.startswith("phase/")}
    rank = trainer.accelerator.process_index
    torch.save({"rows": rows, "metrics": metrics, "num_processes": trainer.accelerator.num_processes},
               out / f"rank{rank}.pt")
    # shut gloo down before the interpreter does: once, a rank whose work was done aborted at exit
    # ("terminate called without an active exception", exit code -6) and failed the launch
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
