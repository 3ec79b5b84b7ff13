"""SmolLM2-135M-Instruct against Hugging Face transformers on the same GGUF.

The fixture is written by experiments/make_hf_reference.py (torch +
transformers); these tests only read it.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.sampling.decode import StopRule, forward_logits
from qstar_jax.sampling.proposer import rollout
from qstar_jax.sampling.states import pad_states
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

with open(os.path.join(FIXTURES, "smollm2_hf_reference.json")) as f:
    REFERENCE = json.load(f)
PROMPTS = REFERENCE["prompts"]




def test_logits_match_transformers(smollm2):
    """Top-10 logits at every prompt and continuation position, < 1e-2."""
    model, _ = smollm2
    rows = [p["input_ids"] + p["greedy"]["new_token_ids"] for p in PROMPTS]
    tokens, lengths = pad_states(rows, max(map(len, rows)))
    logits = np.asarray(jax.jit(forward_logits)(model, tokens, lengths))
    worst = 0.0
    for i, p in enumerate(PROMPTS):
        n = len(p["input_ids"])
        ref = p["prompt_topk"]
        steps = p["greedy"]["step_topk"]
        idx = np.array(ref["indices"] + steps["indices"])
        val = np.array(ref["values"] + steps["values"], np.float32)
        # Step j of the continuation is predicted at position n - 1 + j.
        positions = np.concatenate([np.arange(n),
                                    n - 1 + np.arange(len(steps["indices"]))])
        ours = np.take_along_axis(logits[i, positions], idx, axis=-1)
        worst = max(worst, float(np.max(np.abs(ours - val))))
    assert worst < 1e-2, f"max |logit difference| {worst}"


@pytest.mark.parametrize("prompt", PROMPTS, ids=[p["name"] for p in PROMPTS])
def test_greedy_continuation_matches_transformers(smollm2, prompt):
    """24 greedy tokens through the KV-cache decode path, identical ids."""
    model, config = smollm2
    expected = prompt["greedy"]["new_token_ids"]
    vocab = config.vocab_size
    eos = REFERENCE["metadata"]["eos_token_id"]
    stop = StopRule(delimiter=jnp.zeros(vocab, bool),
                    end=jnp.zeros(vocab, bool).at[eos].set(True),
                    final=jnp.zeros(vocab, bool))
    tokens, lengths = pad_states([prompt["input_ids"]], len(prompt["input_ids"]))
    keys = jax.random.split(jax.random.key(0), 1)
    out = jax.jit(rollout, static_argnames=("max_tokens",))(
        model, tokens, lengths, keys, stop, max_tokens=24)
    got = np.asarray(out.tokens[0, 0, :int(out.lengths[0, 0])]).tolist()
    assert got == expected
    assert bool(out.ended_by_end[0, 0]) == prompt["greedy"]["stopped_at_eos"]
