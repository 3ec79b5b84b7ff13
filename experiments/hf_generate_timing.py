"""Times Hugging Face transformers `generate` on a GGUF model (needs torch).

Called by bench_decode.py, in this interpreter when torch and transformers are
importable here, otherwise through `--torch-python` (an interpreter that has
them, e.g. the reference environment described in make_hf_reference.py).

Usage:
  python experiments/hf_generate_timing.py --gguf FILE --batch 8 \
      --prompt-ids 1,2,3 --new-tokens 224
Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--prompt-ids", required=True)
    parser.add_argument("--new-tokens", type=int, required=True)
    args = parser.parse_args()

    import torch
    import transformers

    directory, name = os.path.split(args.gguf)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    ids = [int(i) for i in args.prompt_ids.split(",")]
    inputs = torch.tensor([ids] * args.batch)
    mask = torch.ones_like(inputs)

    def run(new_tokens):
        with torch.no_grad():
            out = model.generate(
                input_ids=inputs, attention_mask=mask, do_sample=False,
                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                pad_token_id=0)
        return out.shape[1] - inputs.shape[1]

    run(2)  # Warm-up.
    start = time.perf_counter()
    generated = run(args.new_tokens)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "batch": args.batch, "new_tokens": generated, "seconds": seconds,
        "tokens_per_s": args.batch * generated / seconds,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
