"""Imagination: new prompts for self-improvement, kept apart from answers.

A prompt source is a function that returns `Imagined`: the prompts (what
search and the filter see: a uid, the question, the source's name, and no
answer) and, separately, the answer key (uid -> the answer the source knows,
for analysis only; `self_improve` writes it to its own file that the search
and filter stages never open). Sources:

* `arithchain_variations`: ArithChain problems drawn under other settings
  (`ArithChainVariation`: seeds, step counts, start and operand ranges,
  distractors, sentence templates). A problem is kept only if the
  reference task's split hash (`arithchain.split_of` under the default
  task's config) puts its program in 'train', so no held-out program, with
  whatever names and sentences, can become a prompt; duplicates (by the
  program's signature) are dropped.
* `policy_written_prompts`: the policy continues a few-shot prompt of
  example questions (one per line) with a new line; what it writes is kept
  only if the task's parser (`PromptParser`, for ArithChain
  `arithchain_parser`: `arithchain_text.parse_question` and the split hash)
  reads a problem from it that is not held out and not seen before.
* `gsm8k_substitution.gsm8k_substitutions`: GSM8K questions with their
  numbers replaced, the answer recomputed from the calculator annotations.

Every source is deterministic in its seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.learning.arithchain_text import (TEMPLATE_SETS,
                                                parse_question,
                                                render_question)
from qstar_jax.sampling.decode import prefill, sample_continuations
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.states import pad_batch, stop_rule
from qstar_jax.tasks.arithchain import (ArithChainConfig, make_problem,
                                        split_of)
from qstar_jax.tasks.base import Problem

PROMPTS_FILE = "prompts.jsonl"
ANSWERS_FILE = "answers.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Prompt:
    """A synthetic prompt as search sees it: no answer, no solution.

    Attributes:
      uid: unique id (names the source and the draw).
      question: the question text.
      source: the source's name.
    """

    uid: str
    question: str
    source: str


@dataclasses.dataclass(frozen=True)
class Imagined:
    """What a prompt source returns.

    Attributes:
      prompts: the kept prompts, in draw order.
      answers: uid -> the answer the source knows (None: unknown), for
        analysis only (the filter's precision).
      rejected: reason -> draws not kept ('held_out', 'duplicate',
        'unparsed', ...).
    """

    prompts: tuple[Prompt, ...]
    answers: dict[str, str | None]
    rejected: dict[str, int]


def as_problem(prompt: Prompt) -> Problem:
    """The prompt as a `Problem` for `task.format_prompt` and `solve`: its
    answer is blank (a synthetic prompt has none to give)."""
    if not isinstance(prompt, Prompt):
        raise TypeError(f"as_problem: expected a Prompt (no answer), got "
                        f"{type(prompt).__name__}")
    return Problem(uid=prompt.uid, question=prompt.question, answer="")


def combine(*parts: Imagined) -> Imagined:
    """The prompts of several sources (a uid seen twice is an error)."""
    prompts, answers, rejected = [], {}, {}
    for part in parts:
        for p in part.prompts:
            if p.uid in answers:
                raise ValueError(f"combine: uid {p.uid!r} appears twice")
            prompts.append(p)
            answers[p.uid] = part.answers.get(p.uid)
        for reason, n in part.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    return Imagined(tuple(prompts), answers, rejected)


def write_imagined(directory: str, imagined: Imagined) -> None:
    """Writes prompts.jsonl and answers.json (atomically, apart)."""
    os.makedirs(directory, exist_ok=True)
    lines = "".join(json.dumps(dataclasses.asdict(p)) + "\n"
                    for p in imagined.prompts)
    _write(os.path.join(directory, PROMPTS_FILE), lines)
    _write(os.path.join(directory, ANSWERS_FILE),
           json.dumps({"answers": imagined.answers,
                       "rejected": imagined.rejected}, indent=1))


def read_prompts(directory: str) -> list[Prompt]:
    """The prompts of `write_imagined` (the answers file is not read)."""
    with open(os.path.join(directory, PROMPTS_FILE)) as f:
        return [Prompt(**json.loads(line)) for line in f if line.strip()]


def read_answers(directory: str) -> dict[str, str | None]:
    """The answer key of `write_imagined` (analysis only)."""
    with open(os.path.join(directory, ANSWERS_FILE)) as f:
        return json.load(f)["answers"]


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithChainVariation:
    """ArithChain settings to draw prompts under (defaults: the default
    task's difficulty).

    Attributes:
      num_steps_min, num_steps_max: operations per problem (2..8).
      start_min, start_max: the starting quantity's range.
      operand_min, operand_max: + and - operands' range.
      mul_max: largest multiplier.
      distractors_min, distractors_max: distractor sentences per problem.
      templates: 'default' (the generator's sentences) or 'extra' (also
        `arithchain_text.EXTRA_TEMPLATES`).
      weight: share of a call's prompts drawn from this variation.
    """

    num_steps_min: int = 6
    num_steps_max: int = 6
    start_min: int = 10
    start_max: int = 99
    operand_min: int = 2
    operand_max: int = 99
    mul_max: int = 9
    distractors_min: int = 2
    distractors_max: int = 2
    templates: str = "default"
    weight: float = 1.0

    def __post_init__(self):
        if self.templates not in TEMPLATE_SETS:
            raise ValueError(f"ArithChainVariation.templates="
                             f"{self.templates!r}; use one of "
                             f"{TEMPLATE_SETS}")
        if not 0 <= self.distractors_min <= self.distractors_max:
            raise ValueError("ArithChainVariation: need 0 <= "
                             "distractors_min <= distractors_max, got "
                             f"{self.distractors_min}.."
                             f"{self.distractors_max}")
        if self.weight < 0:
            raise ValueError(f"ArithChainVariation.weight={self.weight} "
                             "must be >= 0")

    def task_config(self, seed: int,
                    reference: ArithChainConfig) -> ArithChainConfig:
        """The ArithChain config of this variation under `seed` (answer
        range and test share from the reference)."""
        return ArithChainConfig(
            num_steps_min=self.num_steps_min,
            num_steps_max=self.num_steps_max, start_min=self.start_min,
            start_max=self.start_max, operand_min=self.operand_min,
            operand_max=self.operand_max, mul_max=self.mul_max,
            num_distractors=self.distractors_min,
            answer_min=reference.answer_min, answer_max=reference.answer_max,
            test_percent=reference.test_percent, seed=seed)


def allocate(count: int, weights: Sequence[float]) -> list[int]:
    """`count` split over weights by largest remainder (ties to the
    first)."""
    total = float(sum(weights))
    if count < 0 or total <= 0:
        raise ValueError(f"allocate: count {count} >= 0 and a positive "
                         f"total weight needed, got {list(weights)}")
    exact = [count * w / total for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (out[i] - exact[i], i))
    for i in order[:count - sum(out)]:
        out[i] += 1
    return out


def arithchain_variations(variations: Sequence[ArithChainVariation],
                          count: int, *, seed: int,
                          reference: ArithChainConfig = ArithChainConfig(),
                          exclude: frozenset[str] = frozenset(),
                          max_draws: int = 20) -> Imagined:
    """`count` ArithChain prompts drawn under the variations.

    Variation v draws problem i of its own 'train' split under seed
    `100 * seed + v + 1` (never the reference task's seed stream for
    seed >= 0); a program is kept only if `split_of(program, reference)`
    is 'train' and its signature is neither in `exclude` nor drawn
    before. Texts are the generator's, or re-rendered
    (`render_question`) when the variation asks for other templates or a
    range of distractors.

    Args:
      variations: the settings, with weights.
      count: prompts to return (split by weight).
      seed: the draw's seed (use one per round).
      reference: the task whose held-out split is protected.
      exclude: program signatures already used.
      max_draws: draws per kept prompt before giving up (an error).

    Returns:
      `Imagined` with uids 'arith-s{seed}-v{v}-{i}', the source
      'arithchain_variation_{v}', answers the programs' answers.
    """
    if seed < 0:
        raise ValueError(f"arithchain_variations: seed must be >= 0, got "
                         f"{seed}")
    prompts, answers = [], {}
    rejected = {"held_out": 0, "duplicate": 0}
    seen = set(exclude)
    for v, (variation, n) in enumerate(zip(
            variations, allocate(count, [x.weight for x in variations]))):
        config = variation.task_config(100 * seed + v + 1, reference)
        kept, i = 0, 0
        while kept < n:
            if i >= max_draws * max(n, 1):
                raise RuntimeError(f"arithchain_variations: variation {v} "
                                   f"gave {kept} of {n} prompts in {i} "
                                   "draws")
            problem = make_problem(config, "train", i)
            program = problem.program
            i += 1
            if split_of(program, reference) != "train":
                rejected["held_out"] += 1
                continue
            if program.signature() in seen:
                rejected["duplicate"] += 1
                continue
            seen.add(program.signature())
            text = problem.question
            if (variation.templates != "default"
                    or variation.distractors_min
                    != variation.distractors_max):
                rng = random.Random(f"render:{seed}:{v}:{i - 1}")
                text = render_question(
                    program, rng, templates=variation.templates,
                    num_distractors=rng.randint(variation.distractors_min,
                                                variation.distractors_max),
                    distractor_max=max(config.operand_max, config.start_max))
            uid = f"arith-s{seed}-v{v}-{i - 1}"
            prompts.append(Prompt(uid=uid, question=text,
                                  source=f"arithchain_variation_{v}"))
            answers[uid] = str(program.answer)
            kept += 1
    return Imagined(tuple(prompts), answers, rejected)


class ParsedPrompt(NamedTuple):
    """What a `PromptParser` reads from a written question.

    Attributes:
      key: identity for duplicates (ArithChain: the program's signature).
      answer: the answer, when the parser can tell it (None otherwise).
      held_out: the problem belongs to the held-out split.
    """

    key: str
    answer: str | None
    held_out: bool


PromptParser = Callable[[str], ParsedPrompt | None]
"""parse(question) -> ParsedPrompt, or None when it is not a problem."""


def arithchain_parser(reference: ArithChainConfig = ArithChainConfig(), *,
                      min_steps: int = 2, max_steps: int = 8
                      ) -> PromptParser:
    """ArithChain's parser: `parse_question`, values within the reference's
    answer range, the split hash of the reference task."""
    def parse(text: str) -> ParsedPrompt | None:
        program = parse_question(text, min_steps=min_steps,
                                 max_steps=max_steps)
        if program is None or not all(
                reference.answer_min <= x <= reference.answer_max
                for x in program.values()):
            return None
        return ParsedPrompt(key=program.signature(),
                            answer=str(program.answer),
                            held_out=split_of(program, reference) != "train")
    return parse


def _write_line(policy, tokens, lengths, keys, stop, *, max_tokens,
                sampling, pad_id):
    cache, logits = prefill(policy, tokens, lengths)
    out = sample_continuations(policy, cache, logits, keys, num_samples=1,
                               max_tokens=max_tokens, stop=stop,
                               sampling=sampling, pad_id=pad_id)
    return out.tokens[:, 0], out.lengths[:, 0]


_write_line_jit = jax.jit(_write_line, static_argnames=(
    "max_tokens", "sampling", "pad_id"))


def policy_written_prompts(policy, tokenizer, examples: Sequence[str],
                           parse: PromptParser, *, attempts: int, seed: int,
                           shots: int = 3, max_tokens: int = 96,
                           sampling: SamplingConfig = SamplingConfig(
                               temperature=1.0),
                           batch_size: int = 64, prompt_width: int = 256,
                           exclude: frozenset[str] = frozenset(),
                           source: str = "policy") -> Imagined:
    """Questions written by the policy from few-shot examples.

    Attempt a shows the policy `shots` example questions (drawn with
    `random.Random(f'{seed}:{a}')`), each followed by a newline, after BOS,
    and samples one more line (until a newline or `max_tokens`; key
    `fold_in(key(seed), a)`). The line is kept when `parse` reads a
    problem that is not held out, whose key is neither in `exclude` nor
    kept before.

    Args:
      policy: the decoder.
      tokenizer: `encode(text, add_bos=...)`, `decode`, `pad_id`, and the
        vocabulary for the stop rule.
      examples: questions to show (training problems).
      parse: the task's parser.
      attempts: lines to sample.
      seed: the draw's seed.
      shots: examples per prompt.
      max_tokens: the longest line.
      sampling: how tokens are drawn.
      batch_size: rows per jitted call.
      prompt_width: slots of the few-shot prompt (longer ones are an
        error).
      exclude: keys already used.
      source: the source's name (and uid prefix).

    Returns:
      `Imagined`; `rejected` counts 'unparsed', 'held_out', 'duplicate'.
    """
    if len(examples) < shots or shots < 1:
        raise ValueError(f"policy_written_prompts: need >= shots ({shots}) "
                         f"examples, got {len(examples)}")
    stop = stop_rule(tokenizer, delimiter="\n")
    rows = []
    for a in range(attempts):
        rng = random.Random(f"{seed}:{a}")
        shown = rng.sample(list(examples), shots)
        ids = tokenizer.encode("\n".join(shown) + "\n", add_bos=True)
        if len(ids) > prompt_width:
            raise ValueError(f"policy_written_prompts: attempt {a} has a "
                             f"{len(ids)}-token prompt > prompt_width "
                             f"{prompt_width}")
        rows.append(ids)
    pad = tokenizer.pad_id
    base = jax.random.key(seed)
    texts = []
    for start in range(0, attempts, batch_size):
        chunk = rows[start:start + batch_size]
        tokens = np.full((len(chunk), prompt_width), pad, np.int32)
        lengths = np.asarray([len(r) for r in chunk], np.int32)
        for j, r in enumerate(chunk):
            tokens[j, :len(r)] = r
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(
            jnp.arange(start, start + batch_size))
        out, out_len = jax.device_get(_write_line_jit(
            policy, pad_batch(tokens, batch_size),
            pad_batch(lengths, batch_size), keys, stop,
            max_tokens=max_tokens, sampling=sampling, pad_id=pad))
        texts += [tokenizer.decode(out[j, :out_len[j]]).strip()
                  for j in range(len(chunk))]
    prompts, answers = [], {}
    rejected = {"unparsed": 0, "held_out": 0, "duplicate": 0}
    seen = set(exclude)
    for a, text in enumerate(texts):
        parsed = parse(text) if text else None
        if parsed is None:
            rejected["unparsed"] += 1
        elif parsed.held_out:
            rejected["held_out"] += 1
        elif parsed.key in seen:
            rejected["duplicate"] += 1
        else:
            seen.add(parsed.key)
            uid = f"{source}-s{seed}-{a}"
            prompts.append(Prompt(uid=uid, question=text, source=source))
            answers[uid] = parsed.answer
    return Imagined(tuple(prompts), answers, rejected)
