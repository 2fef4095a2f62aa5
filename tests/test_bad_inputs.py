"""Bad input of every kind is one line naming the cause, exit code 2, no traceback, and no training.

Each case builds its input in a temporary folder and calls the CLI in this process (``archlab.cli.main``);
all of them are checked by ``archlab plan`` (or the command given), before anything slow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tests.test_cli import cli, tiny_plan

BOMB = "\n".join(["name: bomb", "defaults:", "  model:", "    config:", "      a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"      {c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)])
ONE_RUN = """name: one
defaults:
  model: {model}
  data: {{source: "embedded:wiki", tokenizer: embedded, block_size: 32}}
  train: {{max_steps: 1, per_device_train_batch_size: 2}}
axes: {{v: {{a: {{}}}}}}
matrix: {{v: [a]}}
"""


def _write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _plan(**changes) -> Callable[[Path, Path], list[str]]:
    """A tiny valid plan with ``changes`` (dotted keys under defaults use 'defaults.<section>')."""

    def make(tmp: Path, corpus: Path) -> list[str]:
        data = yaml.safe_load(tiny_plan(tmp, corpus).read_text())
        for key, value in changes.items():
            *path, last = key.split(".")
            node = data
            for part in path:
                node = node.setdefault(part, {})
            node[last] = value
        plan = tmp / "plan.yaml"
        plan.write_text(yaml.safe_dump(data))
        return ["plan", str(plan), "--runs-dir", str(tmp / "runs")]

    return make


def _file(name: str, content: str | bytes, command: str = "plan") -> Callable[[Path, Path], list[str]]:
    return lambda tmp, corpus: [command, str(_write(tmp, name, content)), "--runs-dir", str(tmp / "runs")]


def _fifo(tmp: Path, corpus: Path) -> list[str]:
    os.mkfifo(tmp / "fifo.yaml")
    return ["plan", str(tmp / "fifo.yaml")]


def _unreadable(tmp: Path, corpus: Path) -> list[str]:
    if os.geteuid() == 0:  # root reads any file whatever its mode; the kernel refuses this one (EIO)
        return ["plan", "/proc/self/mem"]
    path = _write(tmp, "secret.yaml", "name: secret\n")
    path.chmod(0)
    return ["plan", str(path)]


def _binary_data(tmp: Path, corpus: Path) -> list[str]:
    folder = tmp / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_bytes(bytes(range(256)) * 8)
    return _plan(**{"defaults.data.source": str(folder)})(tmp, corpus)


def _mc_task_with_code(tmp: Path, corpus: Path) -> list[str]:
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: mine\ndataset_path: json\nprocess_docs: !function utils.process\n")
    return _plan(**{"defaults.eval": [{"name": "mc", "task": str(tasks / "mine.yaml")}], "metrics": ["mc.acc"],
                    "headline": "mc.acc"})(tmp, corpus)


def _data_file(name: str, content: str | bytes) -> Callable[[Path, Path], list[str]]:
    """The tiny plan reading its training text from one file ``name`` (a malformed one)."""
    return lambda tmp, corpus: _plan(**{"defaults.data.source": str(_write(tmp, name, content))})(tmp, corpus)


def _mc(task: str) -> Callable[[Path, Path], list[str]]:
    return _plan(**{"defaults.eval": [{"name": "mc", "tasks": [task], "limit": 2}], "metrics": ["mc.acc"],
                    "headline": "mc.acc"})


def _args(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, corpus: [a.replace("{plan}", str(tiny_plan(tmp, corpus))) for a in args]


CASES = {
    # command-line usage (typer's own click)
    "run without a plan": (_args("run"), "Missing argument 'PLAN'"),
    "misspelt command": (_args("rnu"), "No such command 'rnu'"),
    "unknown flag": (_args("plan", "{plan}", "--frobnicate"), "No such option: --frobnicate"),
    "--cpus-per-run abc": (_args("run", "{plan}", "--cpus-per-run", "abc"), "Invalid value for '--cpus-per-run'"),
    # the plan file itself
    "missing plan": (_args("plan", "no/such/plan.yaml"), "file not found: no/such/plan.yaml"),
    "unreadable plan": (_unreadable, "cannot be read"),
    "non-UTF-8 plan": (_file("latin1.yaml", "name: caf\xe9\n".encode("latin-1")), "not UTF-8 text (byte 0xe9"),
    "plan path is a folder": (lambda tmp, corpus: ["plan", str(tmp)], "is a folder"),
    "FIFO as plan": (_fifo, "is not a regular file"),
    "20,000-deep nesting": (_file("deep.yaml", "name: deep\ndefaults: " + "[" * 20000 + "]" * 20000),
                            "nested too deeply"),
    "YAML alias bomb": (_file("bomb.yaml", BOMB), "expands to more than 100,000 values"),
    "duplicate key": (_file("dup.yaml", "name: a\nmatrix: {}\nname: b\n"), "duplicate key 'name' (first at line 1)"),
    "plan name ../escaped": (_plan(name="../escaped"), "must be a slug"),
    "plan name absolute": (_plan(name="/tmp/abs"), "must be a slug"),
    "plan name empty": (_plan(name=""), "must be a slug"),
    "plan name '.'": (_plan(name="."), "must be a slug"),
    "10^10 runs": (_plan(axes={}, matrix={f"train.k{i}": list(range(10)) for i in range(10)}),
                   "expands to 10,000,000,000 runs, more than the limit of 500"),
    # plan-time checks of the runs
    "unknown eval": (_plan(**{"defaults.eval": [{"name": "los"}]}), "unknown eval 'los' (did you mean 'loss'?)"),
    "bad eval param": (_plan(**{"defaults.eval": [{"name": "loss", "max_exampels": 3}]}),
                       "unknown key 'max_exampels' (did you mean 'max_examples'?)"),
    "negative seed": (_plan(**{"defaults.train.seed": -1}), "train.seed -1 is out of range"),
    "huge seed": (_plan(**{"defaults.train.seed": 2**40}), "out of range; use 0 .. 4294967295"),
    "lr scheduler typo": (_plan(**{"defaults.train.lr_scheduler_type": "cosin"}),
                          "'cosin' is not a transformers scheduler (did you mean 'cosine'?)"),
    "heads do not divide": (_plan(**{"defaults.model.config.num_attention_heads": 5}), "must divide by"),
    "block_size > positions": (_plan(**{"defaults.data.block_size": 128}),
                               "data.block_size=128 is longer than the model's max_position_embeddings=64"),
    "batch > dataset": (_plan(**{"defaults.train.per_device_train_batch_size": 100_000}),
                        "fewer than one batch of 100000"),
    "binary data file": (_binary_data, "is binary, not UTF-8 text"),
    "missing data file": (_plan(**{"defaults.data.source": "./no/such/file.txt"}), "data file not found"),
    "num_hidden_layers: 0": (_plan(**{"defaults.model.config.num_hidden_layers": 0}), "num_hidden_layers=0"),
    "max_steps: true": (_plan(**{"defaults.train.max_steps": True}), "'train.max_steps': a boolean is not a number"),
    "baseline label typo": (_plan(baseline={"pos": "rop"}), "baseline.pos: 'rop' is not one of its values"),
    "hidden_size: 0": (_plan(**{"defaults.model.config.hidden_size": 0}), "a size in model.config is 0"),
    "vocab below the tokenizer's": (_plan(**{"defaults.model.config.vocab_size": 10}),
                                    "vocab_size=10 is smaller than the tokenizer's"),
    "pattern longer than the layers": (_plan(**{"defaults.model.config.pattern": ["attention"] * 9}),
                                       "would never be used; shorten the pattern or add layers"),
    "unknown mixer in an unused pattern slot": (_plan(**{"defaults.model.config.pattern": ["attention", "nosuch"],
                                                         "defaults.model.config.num_hidden_layers": 1}),
                                                "nosuch"),
    "niah depth out of range": (_plan(**{"defaults.eval": [{"name": "loss"}, {"name": "niah", "depths": [2.0]}]}),
                                "'depths.0': input should be less than or equal to 1"),
    "unknown haystack": (_plan(**{"defaults.eval": [{"name": "loss"}, {"name": "niah", "haystack": "wikii"}]}),
                         "unknown embedded corpus 'wikii' (did you mean 'wiki'?)"),
    "report_to typo": (_plan(**{"defaults.train.report_to": ["tensorbord"]}),
                       "unknown tracker 'tensorbord' (did you mean 'tensorboard'?)"),
    "runs-dir is a file": (lambda tmp, corpus: [*_plan()(tmp, corpus)[:2], "--runs-dir", str(_write(tmp, "f.txt", "x"))],
                           "is a file, not a folder"),
    "mixer options not a mapping": (_plan(**{"defaults.model.config.mixer_options": {"attention": 5}}),
                                    "mixer_options.attention must be a mapping of that mixer's options"),
    "model.config wrong type": (_plan(**{"defaults.model.config.num_hidden_layers": "two"}),
                                "model.config.num_hidden_layers: input should be a valid integer"),
    "model.config bool for a number": (_plan(**{"defaults.model.config.hidden_size": True}),
                                       "model.config.hidden_size: a boolean is not a number"),
    "strict config wrong type": (_file("gpt2.yaml", ONE_RUN.format(model="{arch: gpt2_variants, config: {n_embd: big}}")),
                                 "model.config.n_embd: expected int, got str (value: 'big')"),
    "hf_config wrong type": (_file("llama.yaml", ONE_RUN.format(model="{hf_config: {model_type: llama, hidden_size: big}}")),
                             "model.hf_config.hidden_size: expected int, got str (value: 'big')"),
    "unknown activation (gpt2)": (_file("act.yaml", ONE_RUN.format(
        model="{arch: gpt2_variants, config: {n_embd: 32, n_layer: 1, n_head: 2, activation_function: gelu_neww}}")),
        "model.config.activation_function: unknown value 'gelu_neww' (did you mean 'gelu_new'?)"),
    "unknown activation (hf_config)": (_file("act2.yaml", ONE_RUN.format(
        model="{hf_config: {model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
              "num_attention_heads: 2, hidden_act: siluu}}")),
        "model.hf_config.hidden_act: unknown value 'siluu' (did you mean 'silu'?)"),
    "mag_weight schedule out of range": (_file("mag.yaml", ONE_RUN.format(
        model="{hf_config: {model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
              "num_attention_heads: 2}}").replace("train: {", "graft: {operator: delta_rule}\n  train: {schedules: "
                                                    "{mag_weight: {type: linear, start: 0, end: 7, steps: 2}}, ")),
        "train.schedules.mag_weight (linear) reaches 7, but mag_weight must be in [0, 1]"),
    "teach_scale schedule below 0": (_file("teach.yaml", ONE_RUN.format(
        model="{arch: hope, config: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, cms_periods: [4]}}")
        .replace("train: {", "train: {schedules: {teach_scale: {type: cyclic, values: [0.1, -0.1], eval_value: 0.1}}, ")),
        "train.schedules.teach_scale (cyclic) reaches -0.1, but teach_scale must be >= 0"),
    "duo_predict mask on <|endoftext|>": (_file("duo.yaml", ONE_RUN.format(
        model="{arch: gpt2_variants, config: {n_embd: 32, n_layer: 1, n_head: 2, duo_predict: true}}").replace(
        "tokenizer: embedded", "tokenizer: gpt2")),
        "model.config.duo_predict puts its mask slot on the last id 50256, which this tokenizer uses for "
        "'<|endoftext|>'"),
    "entropy patching without an entropy model": (_file("blt.yaml", ONE_RUN.format(
        model="{arch: byte_latent, config: {patching: entropy, size: tiny}}").replace("tokenizer: embedded",
                                                                                      "tokenizer: bytes")),
        "model.config.patching: entropy needs a trained entropy model"),
    "bad schedule in the second run only": (  # the same schedule names as the first run's: checked all the same
        _plan(**{"defaults.train.schedules": {"max_grad_norm": {"type": "constant", "value": 1.0}}},
              matrix={"pos": ["learned"], "train.seed": [1, 2]},
              rules=[{"when": {"train.seed": 2}, "set": {"train.schedules.max_grad_norm.value": -1}}]),
        "train.schedules.max_grad_norm (constant) reaches -1, but max_grad_norm must be >= 0"),
    "unknown mixer option": (_plan(**{"defaults.model.config.mixer_options": {"windw": 3}}), "mixer_options.attention: unknown key 'windw' (did you mean 'sliding_window'?)"),
    "rule on an unknown axis": (_plan(rules=[{"when": {"postion": "rope"}, "set": {"train.seed": 1}}]),
                                "'postion' is no axis of this plan (did you mean 'pos'?)"),
    "rule on an unknown label": (_plan(rules=[{"when": {"pos": "rop"}, "set": {"train.seed": 1}}]),
                                 "'rop' is not one of its values (did you mean 'rope'?)"),
    "metric no eval reports": (_plan(metrics=["loss.bpb"]), "eval 'loss' reports no metric 'bpb'"),
    "metric of an eval not run": (_plan(headline="speed.train_tokens_per_second"),
                                  "no run of this plan runs the eval 'speed'"),
    "trust_remote_code unpinned": (_plan(**{"defaults.model.trust_remote_code": True}), "revision: <40-hex commit"),
    "hub tokenizer offline": (_plan(**{"defaults.data.tokenizer": "no-such-org/no-such-tokenizer"}),
                              "data.tokenizer 'no-such-org/no-such-tokenizer' is a Hugging Face hub id"),
    "mc task importing code": (_mc_task_with_code, "uses '!function'"),
    # mc tasks: what loads only when the eval runs, after training, is checked by `plan`
    "mc task file missing": (_mc("no/such/task.jsonl"), "mc task file not found: no/such/task.jsonl"),
    "mc task file malformed": (lambda tmp, corpus: _mc(str(_write(tmp, "t.jsonl", '{"context": "a", "choices": ["b"], '
                                                                   '"gold": 0}\n{"context": \n')))(tmp, corpus),
                               "t.jsonl: line 2 is not JSON: Expecting value"),
    "mc cloze corpus typo": (_mc("cloze:wikki"), "mc task 'cloze:wikki': unknown embedded corpus 'wikki'"),
    # data files datasets cannot parse: the line at fault, and no datasets log line before the error
    "malformed .jsonl line": (_data_file("bad.jsonl", '{"text": "ok"}\n{"text": broken\n'),
                              "bad.jsonl: could not be read as json (line 2 is not JSON: Expecting value at column 10)"),
    ".jsonl line not an object": (_data_file("list.jsonl", '{"text": "ok"}\n[1, 2]\n'),
                                  "(line 2 is JSON but not an object"),
    "truncated .parquet": (_data_file("cut.parquet", b"PAR1"), "could not be read as parquet (ArrowInvalid: "),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_traceback(monkeypatch, capsys, tmp_path, corpus_dir, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make, message = CASES[case]
    args = make(tmp_path, corpus_dir)
    start = time.perf_counter()
    code, out = cli(monkeypatch, capsys, *args)
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, out
    assert len(errors) == 1 and errors[0] == lines[-1], out
    assert message in errors[0], out
    assert "Traceback" not in out
    assert len(lines) <= 2, out  # at most "<plan>: N run(s) ...; checking them..." before the error
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("status.json"))


def test_max_runs_lifts_the_run_limit(monkeypatch, capsys, tmp_path, corpus_dir):
    args = _plan(matrix={"pos": ["learned", "rope"], "train.seed": [1, 2, 3]})(tmp_path, corpus_dir)
    code, out = cli(monkeypatch, capsys, *args, "--max-runs", "5")
    assert code == 2 and "expands to 6 runs, more than the limit of 5; shrink its matrix or pass --max-runs 6" in out
    code, out = cli(monkeypatch, capsys, *args, "--max-runs", "6")
    assert code == 0 and "tiny: 6 run(s)" in out.splitlines()[0]
