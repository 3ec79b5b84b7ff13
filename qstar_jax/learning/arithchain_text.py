"""ArithChain question texts: a parser back to the program, and renderings
with more sentence templates.

`parse_question(text)` is the inverse of the ArithChain generator
(`tasks.arithchain.make_problem`): it reads a question sentence by sentence
and returns the `Program` behind it (start value, operations, operands), or
None when any sentence is not one of the known forms. It accepts the
generator's sentences and the extra forms of `EXTRA_TEMPLATES`; it is the
parser that filters prompts written by a policy (`imagination`), so it is
strict: one person and one object throughout, every quantity a whole number,
distractors only about other objects, a question about the start's person
and object last.

Sentence forms (P the person, O the object, X another person, O2 another
object, N a number):

  start:      P has N O. | P starts with N O. | P owns N O.
  +:          P buys N more O. | P finds N more O. | X gives N O to P. |
              P gets N more O.    extra: P now has N more O. |
              X gives P N more O.
  -:          P gives N O to X. | P loses N O. | P sells N O. | P uses N O.
              extra: P sells N O to X. | P gives X N O.
  *:          P now has N times as many O. | P gets N times as many O.
              extra: P has N times as many O now.
  distractor: X has N O2. | P also has N O2. | X buys N O2.
  question:   How many O does P have now? | How many O does P have in the
              end?    extra: How many O does P have?

`render_question(program, rng, templates='extra')` writes a program with the
union of the generator's and the extra forms; every word is in the shipped
tiny policy's vocabulary (`arithchain.vocabulary_words`).
"""

from __future__ import annotations

import random
import re
from typing import Sequence

import numpy as np

from qstar_jax.learning.probes import sentence_end_targets
from qstar_jax.tasks.arithchain import NAMES, OBJECTS, Program

TEMPLATE_SETS = ("default", "extra")

DEFAULT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "start": ("{p} has {q} {o}.", "{p} starts with {q} {o}.",
              "{p} owns {q} {o}."),
    "+": ("{p} buys {q} more {o}.", "{p} finds {q} more {o}.",
          "{x} gives {q} {o} to {p}.", "{p} gets {q} more {o}."),
    "-": ("{p} gives {q} {o} to {x}.", "{p} loses {q} {o}.",
          "{p} sells {q} {o}.", "{p} uses {q} {o}."),
    "*": ("{p} now has {q} times as many {o}.",
          "{p} gets {q} times as many {o}."),
    "distractor": ("{x} has {q} {o}.", "{p} also has {q} {o}.",
                   "{x} buys {q} {o}."),
    "question": ("How many {o} does {p} have now?",
                 "How many {o} does {p} have in the end?"),
}
"""The generator's sentence forms (as in `tasks.arithchain`), by role."""

EXTRA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "start": (),
    "+": ("{p} now has {q} more {o}.", "{x} gives {p} {q} more {o}."),
    "-": ("{p} sells {q} {o} to {x}.", "{p} gives {x} {q} {o}."),
    "*": ("{p} has {q} times as many {o} now.",),
    "distractor": (),
    "question": ("How many {o} does {p} have?",),
}
"""Further sentence forms, written with the generator's words only."""

_NAME = "|".join(NAMES)
_OBJECT = "|".join(OBJECTS)
_N = r"(\d+)"


def _forms(role: str) -> list[re.Pattern]:
    """Regular expressions of every form of a role (both template sets);
    groups: p (person), x (other person), q (number), o (object)."""
    out = []
    for template in DEFAULT_TEMPLATES[role] + EXTRA_TEMPLATES[role]:
        pattern = re.escape(template)
        for field, group in (("p", f"(?P<p>{_NAME})"),
                             ("x", f"(?P<x>{_NAME})"),
                             ("q", f"(?P<q>{_N[1:-1]})"),
                             ("o", f"(?P<o>{_OBJECT})")):
            pattern = pattern.replace(re.escape("{" + field + "}"), group)
        out.append(re.compile(pattern))
    return out


_FORMS = {role: _forms(role) for role in DEFAULT_TEMPLATES}
_SENTENCE = re.compile(r"[^.?]*[.?]")


def split_sentences(text: str) -> list[str] | None:
    """The sentences of a question ('.' or '?' ends one), stripped; None
    when text is left after the last sentence."""
    text = text.strip()
    sentences = [s.strip() for s in _SENTENCE.findall(text)]
    if "".join(s.replace(" ", "") for s in sentences) != text.replace(
            " ", ""):
        return None
    return sentences


def _matches(role: str, sentence: str) -> list[dict]:
    """The fields of every form of `role` the sentence matches."""
    out = []
    for form in _FORMS[role]:
        m = form.fullmatch(sentence)
        if m is not None:
            out.append(m.groupdict())
    return out


def _operation(sentence: str, person: str, obj: str
               ) -> tuple[str, dict] | None:
    """(op, fields) of the first operation form the sentence matches with
    the problem's person and object (another person as X), or None."""
    for op in ("*", "+", "-"):
        for m in _matches(op, sentence):
            if m["p"] == person and m["o"] == obj and m.get("x") != person:
                return op, m
    return None


def _number(text: str) -> int | None:
    """A whole number written without leading zeros, else None."""
    if len(text) > 1 and text.startswith("0"):
        return None
    return int(text)


def parse_question(text: str, *, min_steps: int = 1,
                   max_steps: int = 8) -> Program | None:
    """The program behind an ArithChain question, or None (module
    docstring: the forms accepted).

    Args:
      text: the question text (without the prompt's trailing newline).
      min_steps: fewest operations accepted.
      max_steps: most operations accepted.

    Returns:
      The `Program`, or None when the text is not an ArithChain question.
    """
    sentences = split_sentences(text)
    if not sentences or len(sentences) < 2:
        return None
    starts = _matches("start", sentences[0])
    questions = _matches("question", sentences[-1])
    if not starts or not questions:
        return None
    person, obj = starts[0]["p"], starts[0]["o"]
    if (questions[0]["p"], questions[0]["o"]) != (person, obj):
        return None
    ops, operands = [], []
    for sentence in sentences[1:-1]:
        step = _operation(sentence, person, obj)
        if step is not None:
            value = _number(step[1]["q"])
            if value is None:
                return None
            ops.append(step[0])
            operands.append(value)
            continue
        if not any(m["o"] != obj and m.get("x") != person
                   and _number(m["q"]) is not None
                   for m in _matches("distractor", sentence)):
            return None
    value = _number(starts[0]["q"])
    if value is None or not min_steps <= len(ops) <= max_steps:
        return None
    return Program(start=value, ops=tuple(ops), operands=tuple(operands))


SENTENCE_ROLES = ("+", "-", "*", "other")
"""Classes of `sentence_roles`: the three operations, and every other
sentence (the start, a distractor, the question)."""

STORY_PROBE_CLASSES = SENTENCE_ROLES + ("person", "other person")
"""Classes of `story_probe_targets`: a sentence's role at its last token,
and at every name whether it is the story's person."""


def sentence_roles(text: str) -> list[str] | None:
    """The role of each sentence of an ArithChain question: its operation
    ('+', '-', '*') on the question's quantity, or 'other' (the start, a
    distractor, the question); None when the text does not parse
    (`parse_question`).

    A label maker for training (e.g. a critic's token probe): the roles
    are what a solver reads from the story.
    """
    if parse_question(text, min_steps=0) is None:
        return None
    sentences = split_sentences(text)
    person, obj = (_matches("start", sentences[0])[0][k] for k in "po")
    out = ["other"]
    for sentence in sentences[1:-1]:
        step = _operation(sentence, person, obj)
        out.append("other" if step is None else step[0])
    return out + ["other"]


def story_probe_targets(tokenizer, questions: Sequence[str],
                        tokens: np.ndarray,
                        prompt_lengths: np.ndarray) -> np.ndarray:
    """Token-probe targets of ArithChain prompts (`probes.ProbedCritic`).

    Two kinds of label, classes of STORY_PROBE_CLASSES: at the last token
    of each sentence ('.' or '?') the sentence's role (`sentence_roles`),
    and at every name token whether the name is the story's person (the
    binding a "who gives to whom" sentence turns on: the role of such a
    sentence is learned with it, and barely without it). Training labels
    only: they come from the question's parse, which no search reads.

    Args:
      tokenizer: the policy's tokenizer (`encode`).
      questions: R question texts, the prompts' stories.
      tokens: [R, L] int32 rows that start with each encoded prompt.
      prompt_lengths: [R] tokens of each row's prompt.

    Returns:
      [R, W] int32 targets (-1: no label), W = the longest prompt.

    Raises:
      ValueError: a question does not parse, or its prompt's sentence ends
        do not match its sentences.
    """
    roles = []
    for text in questions:
        row = sentence_roles(text)
        if row is None:
            raise ValueError(f"not an ArithChain question: {text!r}")
        roles.append([STORY_PROBE_CLASSES.index(r) for r in row])
    ends = [tokenizer.encode(".")[0], tokenizer.encode("?")[0]]
    out = sentence_end_targets(tokens, prompt_lengths, roles, ends)
    # A name is one token, with or without its leading space.
    name_of = {tokenizer.encode(prefix + name)[-1]: name
               for name in NAMES for prefix in ("", " ")}
    person, other = (STORY_PROBE_CLASSES.index(c)
                     for c in ("person", "other person"))
    for i, text in enumerate(questions):
        story_person = _matches("start", split_sentences(text)[0])[0]["p"]
        row = tokens[i, :prompt_lengths[i]]
        for t in np.flatnonzero(np.isin(row, list(name_of))):
            out[i, t] = (person if name_of[int(row[t])] == story_person
                         else other)
    return out


def render_question(program: Program, rng: random.Random, *,
                    templates: str = "extra",
                    num_distractors: int = 2,
                    distractor_max: int = 99) -> str:
    """A question text for `program`.

    Args:
      program: what the question asks.
      rng: the random stream (names, object, forms, distractors).
      templates: 'default' (the generator's forms) or 'extra' (those and
        `EXTRA_TEMPLATES`).
      num_distractors: sentences about other quantities.
      distractor_max: largest number in a distractor sentence.

    Returns:
      The question (sentences joined by spaces).
    """
    if templates not in TEMPLATE_SETS:
        raise ValueError(f"render_question: templates={templates!r}; use "
                         f"one of {TEMPLATE_SETS}")

    def forms(role):
        extra = EXTRA_TEMPLATES[role] if templates == "extra" else ()
        return DEFAULT_TEMPLATES[role] + extra

    person, other, third = rng.sample(NAMES, 3)
    obj = rng.choice(OBJECTS)
    sentences = [rng.choice(forms("start")).format(p=person, q=program.start,
                                                   o=obj)]
    for op, q in zip(program.ops, program.operands):
        sentences.append(rng.choice(forms(op)).format(p=person, x=other,
                                                      q=q, o=obj))
    for _ in range(num_distractors):
        other_obj = rng.choice([o for o in OBJECTS if o != obj])
        at = rng.randint(1, len(sentences))
        sentences.insert(at, rng.choice(forms("distractor")).format(
            p=person, x=third, o=other_obj, q=rng.randint(2, distractor_max)))
    sentences.append(rng.choice(forms("question")).format(p=person, o=obj))
    return " ".join(sentences)
