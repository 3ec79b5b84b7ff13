"""Q* one problem at a time on the host: the way peer systems run it.

A Python heap (`reference_astar`) drives the search and, for every node it
expands, calls the same jitted models (`expand_states`) on that single state.
`host_qstar_cached` does the same from a per-node key/value pool kept on
device for the problem (`qstar_cached.stage_states` / `expand_staged`, the
functions of the batched cached search, at B = 1): each expansion encodes
the node's own step once, files it in the pool, and proposes and scores
from [prompt] + [path] without re-encoding the state.
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

from qstar_jax.models.kv_pool import init_model_pool
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.qstar import QStarConfig, QStarModels, expand_states
from qstar_jax.search.qstar_cached import (QStarPools, expand_staged,
                                           file_staged_step, stage_states)
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
        self.parents: list[int] = [-1]
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
        return self.children(state, exp)

    def children(self, state: int, exp) -> PyExpansion:
        """The reference's view of a one-row `Expansion` (host arrays)."""
        children = []
        for k in range(exp.valid.shape[1]):
            step = exp.step_tokens[0, k, :exp.step_lengths[0, k]].tolist()
            self.states.append(self.states[state] + step)
            self.parents.append(state)
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


@functools.partial(jax.jit, static_argnames=("num_nodes", "max_step_tokens"))
def _init_pools(models, tokens, lengths, *, num_nodes, max_step_tokens):
    return QStarPools(*(init_model_pool(
        m, tokens, lengths, num_nodes=num_nodes,
        max_step_tokens=max_step_tokens) for m in (
            models.policy, models.prm.backbone, models.qvm.backbone)))


@functools.partial(jax.jit, static_argnames=("config", "path_slots"),
                   donate_argnames="pools")
def _expand_from_pool(models, stop, pools, ancestors, ancestor_lengths,
                      step_tokens, step_length, node, keys, *, config,
                      path_slots):
    staged = stage_states(models, pools, ancestors, ancestor_lengths,
                          step_tokens, step_length, node, path_slots)
    pools = file_staged_step(pools, staged)
    return expand_staged(models, stop, config, pools, staged, keys), pools


class HostCachedQStarEnv(HostQStarEnv):
    """`HostQStarEnv` whose expansions run from a per-node key/value pool.

    State i of the reference is pool slot i; the pool holds 1 + K *
    max_expansions slots (every state the search can create).

    Args:
      models, stop, config, prompt, key: as for `HostQStarEnv`.
      prompt_width: P0, slots of the prompt cache (>= len(prompt)).
      path_slots: W, dense path slots (>= state_width - len(prompt)).
    """

    def __init__(self, models: QStarModels, stop: StopRule,
                 config: QStarConfig, prompt: list[int], key: jax.Array, *,
                 prompt_width: int, path_slots: int):
        super().__init__(models, stop, config, prompt, key)
        if path_slots < config.state_width - len(prompt):
            raise ValueError(
                f"HostCachedQStarEnv: path_slots = {path_slots} < "
                f"state_width - prompt length = "
                f"{config.state_width - len(prompt)}")
        self.path_slots = path_slots
        self.max_depth = config.search.max_expansions + 1
        tokens, lengths = pad_states([prompt], width=prompt_width)
        self.pools = _init_pools(
            models, tokens, lengths,
            num_nodes=1 + config.proposer.num_steps
            * config.search.max_expansions,
            max_step_tokens=config.proposer.max_step_tokens)

    def expand(self, state: int, depth: int) -> PyExpansion:
        del depth
        t = self.config.proposer.max_step_tokens
        chain, node = [], self.parents[state]
        while node > 0:
            chain.append(node)
            node = self.parents[node]
        chain = chain[::-1]
        ancestors = np.full((1, self.max_depth), -1, np.int32)
        lengths = np.zeros((1, self.max_depth), np.int32)
        for j, a in enumerate(chain):
            ancestors[0, j] = a
            lengths[0, j] = len(self.states[a]) - len(
                self.states[self.parents[a]])
        step = self.states[state][len(self.states[self.parents[state]]):] \
            if state > 0 else []
        step_tokens = np.zeros((1, t), np.int32)
        step_tokens[0, :len(step)] = step
        key = jax.random.fold_in(self.key, self.calls)
        self.calls += 1
        exp, self.pools = _expand_from_pool(
            self.models, self.stop, self.pools, ancestors, lengths,
            step_tokens, np.asarray([len(step)], np.int32),
            np.asarray([state], np.int32), key[None], config=self.config,
            path_slots=self.path_slots)
        return self.children(state, jax.device_get(exp))


def host_qstar_cached(models: QStarModels, stop: StopRule,
                      config: QStarConfig, prompt: list[int],
                      key: jax.Array, *, prompt_width: int,
                      path_slots: int) -> ReferenceResult:
    """Q* on one problem with a host Python loop, expansions from the
    per-node key/value pool (see the module docstring)."""
    env = HostCachedQStarEnv(models, stop, config, prompt, key,
                             prompt_width=prompt_width,
                             path_slots=path_slots)
    return reference_astar(env, 0, config.search)
