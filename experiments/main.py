"""Main job: SmolLM2-135M-Instruct answers a GSM8K test question step by step.

Every step comes from the step proposer: the state (chat prompt + steps so
far) is prefilled once, M continuations are sampled from that shared cache
and stopped at a newline, duplicates are removed, and the most likely of the
K distinct candidates is appended. Each chosen step is printed with its
log-probability and the number of distinct alternatives; the final answer is
graded against the gold answer by the GSM8K task.

Usage:
  python experiments/main.py [--index 0] [--seed 0] [--num-steps 4]
"""

from __future__ import annotations

import argparse
import time

import jax

from qstar_jax.models.checkpoint import smollm2_gguf_path
from qstar_jax.models.gguf_loader import load_gguf
from qstar_jax.models.tokenizer import Tokenizer
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import check_context, pad_states, stop_rule
from qstar_jax.tasks.gsm8k_task import Gsm8kTask


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0,
                        help="GSM8K test question (0-based)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=4,
                        help="K distinct candidates per step")
    parser.add_argument("--num-samples", type=int, default=8,
                        help="M sampled continuations per step")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-step-tokens", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--cache", type=int, default=448,
                        help="prefix-cache length in tokens")
    args = parser.parse_args()

    start = time.perf_counter()
    path = smollm2_gguf_path()
    model, config = load_gguf(path)
    tokenizer = Tokenizer.from_gguf(path)
    print(f"loaded {path} ({config.num_parameters() / 1e6:.1f}M parameters) "
          f"in {time.perf_counter() - start:.1f}s")
    check_context(config, args.cache, args.max_step_tokens)

    task = Gsm8kTask(chat=tokenizer.apply_chat_template)
    problem = task.problems("test")[args.index]
    state = tokenizer.encode(task.format_prompt(problem))
    stop = stop_rule(tokenizer, delimiter="\n")
    proposer = ProposerConfig(
        num_steps=args.num_steps, num_samples=args.num_samples,
        max_step_tokens=args.max_step_tokens,
        sampling=SamplingConfig(temperature=args.temperature),
        pad_id=tokenizer.pad_id or 0)
    propose = jax.jit(propose_steps, static_argnames="config")
    key = jax.random.key(args.seed)

    print(f"\nQuestion {args.index}: {problem.question}\n")
    solution = ""
    for step_index in range(args.max_steps):
        tokens, lengths = pad_states([state], width=args.cache)
        key, step_key = jax.random.split(key)
        t0 = time.perf_counter()
        out = propose(model, tokens, lengths, step_key[None], stop,
                      config=proposer)
        n = int(out.lengths[0, 0])
        step_ids = [int(t) for t in out.tokens[0, 0, :n]]
        text = tokenizer.decode(step_ids, skip_special=True)
        state += step_ids
        solution += text
        distinct = int(out.valid[0].sum())
        print(f"step {step_index + 1} ({distinct} distinct of "
              f"{args.num_samples} samples, log p = "
              f"{float(out.log_probs[0, 0]):.2f}, "
              f"{time.perf_counter() - t0:.1f}s): "
              f"{text.strip() or '(blank line)'}", flush=True)
        if (bool(out.finished[0, 0]) or task.is_finished(solution)
                or len(state) + args.max_step_tokens > args.cache):
            break

    answer = task.extract_answer(solution)
    correct = task.reward(problem, solution) == 1.0
    print(f"\nGold answer: {problem.answer}. Model answer: {answer}. "
          f"{'Correct' if correct else 'Wrong'}.")
    print(f"total {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
