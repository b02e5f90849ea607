"""Generation speed with and without the key/value cache (``minituner/generation/sampling.py``), on the CPU.

Greedy decoding of one sequence from a 4-token prompt, for several numbers of new tokens, at the
default MiniGPT shape and the ~100M preset (random weights: speed does not depend on skill; the
end-of-text row of the tied embedding is zeroed so no run stops early). Each figure is the median
of repeated runs in this process, tokens per second = new tokens / seconds; ``speedup`` is the
cached rate over the uncached one. Without the cache step t recomputes all t positions (O(T^2)
work in all); with it each step runs one position. Prints JSON; ``--write`` also writes
``benchmarks/results/generate_speed.json`` and the generated ``generate_speed.md``.
Goal: the cache is faster beyond a few dozen tokens.

    .venv/bin/python benchmarks/generate_speed.py [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from result_files import markdown_table, write_results

from minituner.config.nodes import model_preset
from minituner.generation.sampling import SamplingSettings, generate_batch
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.model.tokenizer import ByteTokenizer

LENGTHS = {"minigpt": [8, 16, 32, 59], "minigpt_100m": [8, 32, 64, 128]}


def preset(name: str) -> MiniGPTConfig:
    return model_preset(name)


def never_ending_model(config: MiniGPTConfig) -> MiniGPT:
    torch.manual_seed(0)
    model = MiniGPT(config).eval()
    with torch.no_grad():  # EOS's logit is then 0, below the largest of 258 others (random signs)
        model.tok_emb.weight[ByteTokenizer().eos_id] = 0
    return model


def rate(model: MiniGPT, new_tokens: int, use_cache: bool, repeats: int) -> dict:
    prompt = [ByteTokenizer().encode("go: ", bos=True)]
    settings = SamplingSettings(max_new_tokens=new_tokens)
    generate_batch(model, prompt, settings, use_cache=use_cache)  # warm-up
    times, produced = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        produced = len(generate_batch(model, prompt, settings, use_cache=use_cache)[0].tokens)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"new_tokens": produced, "seconds": round(seconds, 5), "tokens_per_second": round(produced / seconds, 1)}


def report(results: dict) -> str:
    """The markdown table of ``results``: tokens per second with and without the cache."""
    rows = [
        [
            f"`{name}` ({entry['parameters'] / 1e6:.2f}M)",
            row["new_tokens"],
            f"{row['cached']['tokens_per_second']} tok/s",
            f"{row['uncached']['tokens_per_second']} tok/s",
            f"**{row['speedup']:.2f}x**",
        ]
        for name, entry in results["models"].items()
        for row in entry["rows"]
    ]
    header = ["model", "new tokens", "with cache", "without", "speedup"]
    setting = f"Greedy, batch 1, {results['threads']} threads, median of {results['repeats']} repeats, random weights."
    return f"{setting}\n\n{markdown_table(header, rows)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write results/generate_speed.{json,md}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__, "models": {}}
    for name, lengths in LENGTHS.items():
        model = never_ending_model(preset(name))
        rows = []
        for new_tokens in lengths:
            repeats = args.repeats if name == "minigpt" else max(1, args.repeats // 2)
            cached, full = rate(model, new_tokens, True, repeats), rate(model, new_tokens, False, repeats)
            rows.append(
                {
                    "new_tokens": new_tokens,
                    "cached": cached,
                    "uncached": full,
                    "speedup": round(cached["tokens_per_second"] / full["tokens_per_second"], 2),
                }
            )
            print(json.dumps({"model": name, **rows[-1]}), flush=True)
        results["models"][name] = {"parameters": model.num_parameters(), "rows": rows}
    if args.write:
        write_results("generate_speed", results, "Generation speed with and without the KV cache", report(results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
