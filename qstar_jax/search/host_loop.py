"""Q* one problem at a time on the host: the way peer systems run it.

A Python heap (`reference_astar`) drives the search and, for every node it
expands, calls the same jitted models (`expand_states`) on that single state.
This is the baseline of the end-to-end search benchmark: the algorithm, the
models, the per-expansion keys (`fold_in(key, i)` for the i-th expansion) and
the tie rules are those of the batched `qstar_search`, so the two agree on a
problem's answer except where float differences between batch shapes tip a
sample or a tie.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.qstar import QStarConfig, QStarModels, expand_states
from qstar_jax.search.reference_astar import ReferenceResult, reference_astar
from qstar_jax.search.synthetic import PyChild, PyExpansion


@functools.partial(jax.jit, static_argnames="config")
def _expand_one(models, stop, tokens, lengths, keys, *, config):
    return expand_states(models, stop, config, tokens, lengths, keys)


class HostQStarEnv:
    """A `ReferenceEnv` whose states are token lists and whose steps come from
    the jitted policy and critics, one state per call.

    Args:
      models: policy, PRM and QVM.
      stop: token masks.
      config: the Q* settings (edge heuristic).
      prompt: the problem's prompt tokens (state 0).
      key: the problem's PRNG key.
    """

    def __init__(self, models: QStarModels, stop: StopRule,
                 config: QStarConfig, prompt: list[int], key: jax.Array):
        self.models, self.stop, self.config, self.key = (models, stop, config,
                                                         key)
        self.states: list[list[int]] = [list(prompt)]
        self.calls = 0

    def expand(self, state: int, depth: int) -> PyExpansion:
        del depth
        tokens, lengths = pad_states([self.states[state]],
                                     width=self.config.state_width)
        key = jax.random.fold_in(self.key, self.calls)
        self.calls += 1
        exp = jax.device_get(_expand_one(self.models, self.stop, tokens,
                                         lengths, key[None],
                                         config=self.config))
        children = []
        for k in range(exp.valid.shape[1]):
            step = exp.step_tokens[0, k, :exp.step_lengths[0, k]].tolist()
            self.states.append(self.states[state] + step)
            children.append(PyChild(
                state=len(self.states) - 1, tokens=tuple(step),
                log_prob=float(exp.log_probs[0, k]),
                valid=bool(exp.valid[0, k]),
                terminal=bool(exp.terminal[0, k]),
                reward=float(np.float32(exp.reward[0, k])),
                q_value=float(np.float32(exp.q_value[0, k]))))
        return PyExpansion(children=children,
                           generated_tokens=int(exp.generated_tokens[0]))

    def lookahead(self, state: int, depth: int,
                  terminal: bool) -> tuple[float, int]:
        raise ValueError("the host-loop Q* supports the 'edge' heuristic "
                         "only; use qstar_search for 'lookahead'")


def host_qstar(models: QStarModels, stop: StopRule, config: QStarConfig,
               prompt: list[int], key: jax.Array) -> ReferenceResult:
    """Q* on one problem with a host Python loop (see module docstring)."""
    env = HostQStarEnv(models, stop, config, prompt, key)
    return reference_astar(env, 0, config.search)
