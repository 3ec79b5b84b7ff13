"""Every Python block of README.md runs, so an example cannot drift from the
API.

Conventions (HTML comments, invisible when the README is rendered), read
from the comments directly before a block:

* a ```python block runs in a fresh namespace, in a temporary working
  directory (files it writes vanish), with tests/ importable (setups may
  use tests/scale_workloads.py);
* `<!-- test: continue -->`: the block runs in the namespace of the Python
  block before it (a walk-through split by prose);
* `<!-- test: setup` ... `-->`: the comment's other lines are code run
  first, hidden (small stand-ins for a large model or dataset);
* `<!-- test: devices=N -->`: the block (with its chain) runs in a fresh
  interpreter with N simulated CPU devices;
* `<!-- test: output -->` before a ```text block: that block must equal
  what the Python block before it printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap
import types

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
README = os.path.join(ROOT, "README.md")
_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!-- test: (\w+)(?:=(\d+))?(.*?)(-->)?\s*$")


def parse_blocks(text: str) -> list[dict]:
    """The README's fenced blocks with their test directives, in order:
    dicts of kind ('python', 'text', ...), code, line, setup, continue,
    devices, output (a text block to compare), heading."""
    lines = text.split("\n")
    blocks, pending, heading = [], {}, "top"
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.strip("# ").strip()
        match = _DIRECTIVE.match(line)
        if match:
            name, number, rest, closed = match.groups()
            body = []
            if not closed:
                i += 1
                while not lines[i].startswith("-->"):
                    body.append(lines[i])
                    i += 1
            if name == "setup":
                pending["setup"] = "\n".join(body + [rest.strip()])
            elif name == "devices":
                pending["devices"] = int(number)
            elif name in ("continue", "output"):
                pending[name] = True
            else:
                raise ValueError(f"README.md:{i + 1}: unknown test "
                                 f"directive {name!r}")
        fence = _FENCE.match(line)
        if fence and not match:
            start, code = i + 1, []
            i += 1
            while not lines[i].startswith("```"):
                code.append(lines[i])
                i += 1
            blocks.append(dict(kind=fence.group(1), code="\n".join(code),
                               line=start, heading=heading, **pending))
            pending = {}
        elif pending and line.strip() and not match:
            raise ValueError(f"README.md:{i + 1}: a test directive must "
                             "come directly before its block")
        i += 1
    return blocks


def chains(blocks: list[dict]) -> list[list[dict]]:
    """Python blocks grouped into chains (a block and the blocks that
    continue it), each with the text block it must print, if any."""
    out, last = [], None
    for block in blocks:
        if block["kind"] == "python":
            if block.get("continue"):
                if not out:
                    raise ValueError(f"README.md:{block['line']}: nothing "
                                     "to continue")
                out[-1].append(block)
            else:
                out.append([block])
            last = block
        elif block.get("output"):
            if last is None or last.get("expected") is not None:
                raise ValueError(f"README.md:{block['line']}: an output "
                                 "block without its Python block")
            last["expected"] = block["code"]
    return out


def _script(chain: list[dict]) -> list[tuple[dict, str]]:
    """(block, code to run) pairs: each block's setup, then the block."""
    return [(block, (block.get("setup", "") + "\n" + block["code"]))
            for block in chain]


def _run_here(chain) -> None:
    # A registered module, so that dataclasses and pickling find the
    # classes a block defines; no __future__ flags leak from this file.
    module = types.ModuleType("__readme__")
    sys.modules[module.__name__] = module
    try:
        for block, code in _script(chain):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"README.md:{block['line']}", "exec",
                             dont_inherit=True), module.__dict__)
            _compare(block, out.getvalue())
    finally:
        del sys.modules[module.__name__]


def _run_elsewhere(chain, devices: int) -> None:
    marker = "\n@@README-BLOCK-END@@\n"
    parts = []
    for block, code in _script(chain):
        parts.append(f"exec(compile({code!r}, 'README.md:{block['line']}', "
                     f"'exec'), ns)\nprint({marker!r}, end='')")
    script = "ns = {'__name__': '__readme__'}\n" + "\n".join(parts)
    path = [TESTS, ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices),
               JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(path))
    done = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    outputs = done.stdout.split(marker)
    for (block, _), printed in zip(_script(chain), outputs):
        _compare(block, printed)


def _compare(block: dict, printed: str) -> None:
    expected = block.get("expected")
    if expected is not None:
        assert printed.rstrip("\n") == expected.rstrip("\n"), (
            f"README.md:{block['line']} printed\n{printed}\nbut the README "
            f"shows\n{expected}")


def _chain_id(chain) -> str:
    words = re.findall(r"[a-z0-9]+", chain[0]["heading"].lower())
    return f"L{chain[0]['line']}-" + "-".join(words[:4])


with open(README) as _f:
    _CHAINS = chains(parse_blocks(_f.read()))


def test_every_python_block_is_in_a_chain():
    with open(README) as f:
        text = f.read()
    assert sum(len(c) for c in _CHAINS) == text.count("\n```python\n")
    assert _CHAINS, "README.md has no Python block"


@pytest.mark.parametrize("chain", _CHAINS, ids=_chain_id)
def test_readme_block_runs(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    devices = max(block.get("devices", 1) for block in chain)
    if devices > 1:
        _run_elsewhere(chain, devices)
    else:
        _run_here(chain)


def test_directives_are_parsed():
    text = textwrap.dedent("""\
        ## A
        <!-- test: setup
        x = 2
        -->
        ```python
        print(x)
        ```
        <!-- test: output -->
        ```text
        2
        ```
        <!-- test: continue -->
        <!-- test: devices=8 -->
        ```python
        print(x + 1)
        ```
        ```bash
        ls
        ```
        """)
    (first, second), = chains(parse_blocks(text))
    assert first["setup"].strip() == "x = 2" and first["expected"] == "2"
    assert second.get("continue") and second["devices"] == 8
    assert "expected" not in second
