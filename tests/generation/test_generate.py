"""Text generation: the KV cache against the full forward, sampling settings, and minituner-generate as users run it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from minituner.apps.generate import run_generate, text_overrides
from minituner.config.errors import ConfigError
from minituner.config.generation import plan_generation
from minituner.config.shipped import CONF_DIR
from minituner.data.instructions import format_prompt
from minituner.data.verb_prompts import verb_prompts
from minituner.generation.sampling import SamplingSettings, filter_logits, generate, generate_batch
from minituner.generation.verb_task import first_word
from minituner.lora.adapter_io import AdapterError, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.layer import adapter_parameters
from minituner.lora.merge import merged_copy
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.model.tokenizer import ByteTokenizer
from minituner.quant.linear import quantize_model
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, run_app

TOKENIZER = ByteTokenizer()
PROMPTS = ["go: yesterday she", "eat: last night we", "a", "write: she has already"]


def peaked_model(lora: bool = False, quant: str = "none") -> MiniGPT:
    """A small MiniGPT whose weights are scaled up so greedy choices are far from ties."""
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, block_size=48))
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(8)
    if quant != "none":
        quantize_model(model, quant)
    if lora:
        inject_lora(model, LoRAConfig(r=4, target_modules="all_linear", seed=1))
        with torch.no_grad():
            for param in adapter_parameters(model).values():
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(2)) * 0.3)
    return model.eval()


def encoded(prompts: list[str] = PROMPTS) -> list[list[int]]:
    return [TOKENIZER.encode(p, bos=True) for p in prompts]


def greedy_tokens(model: MiniGPT, max_new_tokens: int) -> list[list[int]]:
    return [g.tokens for g in generate(model, encoded(), SamplingSettings(max_new_tokens=max_new_tokens))]


@pytest.mark.parametrize(("lora", "quant"), [(False, "none"), (True, "none"), (False, "nf4_dq"), (True, "nf4")])
def test_the_kv_cache_gives_the_full_forwards_tokens_and_logits_at_every_step(lora, quant):
    model = peaked_model(lora, quant)
    settings = SamplingSettings(max_new_tokens=40)
    ids = encoded(["go: yesterday she"] * 3)
    cached_logits, full_logits = [], []
    cached = generate_batch(model, ids, settings, use_cache=True, step_logits=cached_logits)
    full = generate_batch(model, ids, settings, use_cache=False, step_logits=full_logits)
    assert [g.tokens for g in cached] == [g.tokens for g in full]
    assert len(cached_logits) == len(full_logits) > 20
    for a, b in zip(cached_logits, full_logits, strict=True):  # float summation order differs: 1e-4 of the scale
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=0)
    # prompts of different lengths, sampled: the same draws with and without the cache
    sampled = SamplingSettings(max_new_tokens=20, temperature=0.8, top_k=40, top_p=0.95)
    with_cache = generate(model, encoded(), sampled, torch.Generator().manual_seed(3), use_cache=True)
    without = generate(model, encoded(), sampled, torch.Generator().manual_seed(3), use_cache=False)
    assert [g.tokens for g in with_cache] == [g.tokens for g in without]


def test_same_seed_same_text_and_greedy_is_deterministic():
    model = peaked_model(lora=True)
    sampled = SamplingSettings(max_new_tokens=30, temperature=1.2)
    runs = [generate(model, encoded(), sampled, torch.Generator().manual_seed(5)) for _ in range(2)]
    other = generate(model, encoded(), sampled, torch.Generator().manual_seed(6))
    assert [g.text for g in runs[0]] == [g.text for g in runs[1]]
    assert [g.tokens for g in other] != [g.tokens for g in runs[0]]
    assert greedy_tokens(model, 30) == greedy_tokens(model, 30)


def test_a_lora_adapter_and_its_merged_model_write_the_same_greedy_text():
    model = peaked_model(lora=True)
    assert greedy_tokens(model, 40) == greedy_tokens(merged_copy(model).eval(), 40)


def test_top_k_and_top_p_keep_the_most_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.1)).tolist() == [[True, False, False, False]]
    shuffled = logits[:, [2, 0, 3, 1]]  # the order of the vocabulary does not matter
    assert torch.isfinite(filter_logits(shuffled, None, 0.8)).tolist() == [[False, True, False, True]]
    model = peaked_model()
    for top_k in (1, 3):
        settings = SamplingSettings(max_new_tokens=10, temperature=1.0, top_k=top_k)
        tokens = generate(model, encoded(), settings, torch.Generator().manual_seed(0))[0].tokens
        if top_k == 1:  # top-1 sampling is greedy decoding
            assert tokens == generate(model, encoded(), SamplingSettings(max_new_tokens=10))[0].tokens


def test_generation_stops_at_eos_a_stop_string_the_length_or_the_context():
    model = peaked_model()
    free = generate_batch(model, encoded(["go: yesterday she"]), SamplingSettings(max_new_tokens=100))[0]
    assert free.stop_reason in ("eos", "context")
    if free.stop_reason == "context":
        assert len(free.prompt_ids) + len(free.tokens) == model.config.block_size + 1
    short = generate_batch(model, encoded(["go: yesterday she"]), SamplingSettings(max_new_tokens=3))[0]
    assert short.stop_reason == "length" and len(short.tokens) == 3 and len(short.logprobs) == 3
    assert all(lp <= 0 for lp in short.logprobs)
    stop = TOKENIZER.decode(free.tokens[2:4])
    cut = generate_batch(model, encoded(["go: yesterday she"]), SamplingSettings(max_new_tokens=100, stop=(stop,)))[0]
    assert cut.stop_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)


def test_verb_prompts_stop_before_the_verb_and_the_first_word_is_judged():
    from minituner.data.corpus import CorpusConfig, generate_corpus

    prompts = verb_prompts(generate_corpus(CorpusConfig()).splits["irregular_test"], per_verb_and_form=1)
    assert len(prompts) == 16 and prompts[0].prompt.startswith("be: ")
    assert {p.correct for p in prompts} >= {"went", "gone", "ate", "eaten", "wrote", "written"}
    assert first_word(" went home.") == "went" and first_word("") == ""


def test_plain_text_overrides_are_quoted_for_hydra_and_repeated_prompts_become_a_list():
    args = text_overrides(["prompt=it's ${x}", "prompt=a, b = c\\", "seed=3", "stop=.", "prompt=null"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="generate", overrides=[a for a in args if a != "prompt=null"])
    assert list(cfg.prompt) == ["it's ${x}", "a, b = c\\"] and cfg.stop == "." and cfg.seed == 3
    assert text_overrides(["prompt=['x','y']"]) == ["prompt=['x','y']"]  # Hydra syntax stays


# --- minituner-generate on a real tiny base with a real (quick) LoRA run ------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, parallel_finetunes) -> tuple[Path, Path, Path]:
    """A quick LoRA fine-tune of the session's tiny base (callbacks on): (outputs dir, run dir, base dir)."""
    tmp_path = tmp_path_factory.mktemp("generate")
    shutil.copytree(
        parallel_finetunes / "outputs" / "bases",
        tmp_path / "outputs" / "bases",
        ignore=shutil.ignore_patterns(".*.lock"),
    )
    metrics = train(compose_config(["regime=lora", *QUICK], tmp_path, "lora"))  # the cached base, as users run it
    return tmp_path / "outputs", tmp_path / "lora", Path(metrics["base_dir"])


def generate_cfg(outputs: Path, run_dir: Path, *overrides: str):
    paths = [f"paths.outputs_dir={outputs}", f"paths.output_dir={run_dir}", "model=tiny"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="generate", overrides=paths + text_overrides(list(overrides)))


def test_a_fine_tune_logs_completions_to_tensorboard_at_each_validation(tiny_run):
    events = EventAccumulator(str(tiny_run[1] / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    texts = events.Tensors("samples/completions/text_summary")  # add_text appends /text_summary
    assert [t.step for t in texts] == [0, 3]  # the base (evaluate_base) and the one validation at step 3
    table = texts[0].tensor_proto.string_val[0].decode()
    assert "| prompt | expected | completion |" in table and "went" in table


def test_generate_writes_one_row_per_model_prompt_and_sample(tiny_run, tmp_path):
    outputs, run_dir, base_dir = tiny_run
    cfg = generate_cfg(
        outputs,
        tmp_path / "gen",
        "prompt=go: yesterday she",
        "prompt=see: last week they",
        f"adapter={run_dir / 'adapter'}",
        "merged=true",
        "temperature=0.9",
        "num_samples=2",
        "max_new_tokens=12",
    )
    result = run_generate(cfg, tmp_path / "gen")
    assert result["models"] == ["base", "adapter:lora", "merged:lora"]
    lines = [json.loads(line) for line in (tmp_path / "gen/generations.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 2 * 2
    assert {k for line in lines for k in line} == {
        "prompt",
        "sample",
        "model",
        "text",
        "tokens",
        "logprobs",
        "stop_reason",
        "seed",
    }
    assert all(len(line["tokens"]) == len(line["logprobs"]) <= 12 for line in lines)
    by_model = {m: [line["tokens"] for line in lines if line["model"] == m] for m in result["models"]}
    assert by_model["adapter:lora"] == by_model["merged:lora"]  # sampled too: same stream, same distribution
    table_rows = (tmp_path / "gen/generations.md").read_text().count("\n| ")
    assert table_rows == 1 + 2 * 2 + 1  # header, prompts x samples, speed
    summary = json.loads((tmp_path / "gen/generate.json").read_text())
    assert summary["base"]["path"] == str(base_dir) and summary["speed"]["base"]["tokens_per_second"] > 0
    again = run_generate(cfg, tmp_path / "again")  # same seed, same command: the same text
    assert [r["text"] for r in again["rows"]] == [r["text"] for r in result["rows"]]
    quantized = run_generate(
        generate_cfg(
            outputs, tmp_path / "q", "prompt=go: yesterday she", "quant=nf4_dq", f"adapter={run_dir / 'adapter'}"
        ),
        tmp_path / "q",
    )
    assert quantized["models"] == ["base", "adapter:lora"]


def test_instruction_prompts_use_the_alpaca_template_under_data_jsonl(tiny_run, tmp_path):
    outputs = tiny_run[0]
    cfg = generate_cfg(
        outputs, tmp_path / "g", "data=jsonl", "instruction=Rate.", "input=Good.", "input=Bad!", "prompt=raw text"
    )
    plan = plan_generation(cfg)
    assert plan.prompts == ["raw text", format_prompt("Rate.", "Good."), format_prompt("Rate.", "Bad!")]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "no prompt"),
        (["prompt=" + "x" * 70], "longer than the context"),
        (["prompt=ab\udcff"], "byte 0xff at position 2 is not UTF-8"),
        (["prompt=a", "top_p=0"], "top_p=0 is not allowed"),
        (["prompt=a", "top_p=1.5"], "top_p=1.5 is not allowed"),
        (["prompt=a", "temperature=-0.5"], "temperature=-0.5 is not allowed"),
        (["prompt=a", "top_k=0"], "top_k=0 is not allowed"),
        (["prompt=a", "max_new_tokens=0"], "max_new_tokens=0 is not allowed"),
        (["prompt=a", "merged=true"], "merged=true needs adapter"),
        (["prompt=[a,3]"], "was read as int"),
        (["instruction=Classify"], "add data=jsonl"),
        (["prompt=a", "adapter=/nonexistent"], "/nonexistent does not exist or is not a directory"),
        (["prompt=a", "+top=3"], "top (3) is not a known key"),
    ],
)
def test_bad_generation_input_is_refused_with_its_reason(tiny_run, tmp_path, overrides, expected):
    cfg = generate_cfg(tiny_run[0], tmp_path / "g", *overrides, f"base.path={tiny_run[2]}")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        plan_generation(cfg)


def test_a_prompts_file_that_is_not_utf8_is_named_with_its_line(tiny_run, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"go: yesterday she\n\n\xfe oops\n")
    with pytest.raises(ConfigError, match=r"prompts.txt:3: not UTF-8 text \(byte 0xfe"):
        plan_generation(generate_cfg(tiny_run[0], tmp_path / "g", f"prompts_file={path}"))
    path.write_bytes(b"go: yesterday she\r\n\nsee: last week they\n")
    plan = plan_generation(generate_cfg(tiny_run[0], tmp_path / "g", f"prompts_file={path}"))
    assert plan.prompts == ["go: yesterday she", "see: last week they"]


def test_an_adapter_that_does_not_fit_the_base_is_refused(tiny_run, tmp_path):
    torch.manual_seed(0)
    other = MiniGPT(MiniGPTConfig(n_layer=1, n_head=2, d_model=32, d_ff=32))
    inject_lora(other, LoRAConfig(r=2, target_modules="mlp"))
    save_adapter(other, tmp_path / "other", LoRAConfig(r=2, target_modules="mlp"), tiny_run[2].name, "cd" * 32)
    cfg = generate_cfg(
        tiny_run[0], tmp_path / "g", "prompt=a", f"adapter={tmp_path / 'other'}", "allow_base_mismatch=true"
    )
    with pytest.raises(AdapterError, match="wrong shapes"):
        run_generate(cfg, tmp_path / "g")
    with pytest.raises(AdapterError, match="was trained on base"):
        run_generate(
            generate_cfg(tiny_run[0], tmp_path / "g", "prompt=a", f"adapter={tmp_path / 'other'}"), tmp_path / "g"
        )


def test_the_cli_prints_the_table_and_exits_2_on_bad_input_with_nothing_written(tiny_run, tmp_path):
    outputs, run_dir, _ = tiny_run
    common = [f"paths.outputs_dir={outputs}", "model=tiny", f"adapter={run_dir / 'adapter'}"]
    done = run_app("generate", f"hydra.run.dir={tmp_path}/ok", *common, "prompt=go: it's", "max_new_tokens=5")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "adapter:lora" in done.stdout and "tokens/s" in done.stdout
    assert (tmp_path / "ok/generations.jsonl").is_file()
    bad = run_app("generate", f"hydra.run.dir={tmp_path}/bad", *common, "prompt=go", "top_p=2")
    assert bad.returncode == 2 and "top_p=2 is not allowed" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_the_kv_cache_serves_llama_shaped_blocks():
    torch.manual_seed(0)
    config = MiniGPTConfig(mlp="swiglu", norm="rmsnorm", n_kv_head=2, bias=False, tie_embeddings=False)
    model = MiniGPT(config).eval()
    ids = encoded(["go: yesterday she"] * 2)
    settings = SamplingSettings(max_new_tokens=12)
    cached_logits, full_logits = [], []
    cached = generate_batch(model, ids, settings, use_cache=True, step_logits=cached_logits)
    full = generate_batch(model, ids, settings, use_cache=False, step_logits=full_logits)
    assert [g.tokens for g in cached] == [g.tokens for g in full]
    for a, b in zip(cached_logits, full_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=0)
