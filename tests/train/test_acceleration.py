"""Fast defaults: the precision bf16=auto picks, the compile rule, FLOPs per token, MFU and the run summary,
and that bf16 / compiled training track the fp32 eager loss curve."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import tiny_decoder, tiny_run_config

from archlab import hardware
from archlab.models import ArchlabTransformerConfig, ArchlabTransformerForCausalLM
from archlab.models.flops import training_flops_per_token
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from archlab.train import acceleration
from archlab.train.acceleration import MIN_STEPS, PROBE_STEPS, CompileDecision, resolve_precision
from archlab.train.config import TrainConfig

# ------------------------------------------------------------------------------------------ precision


@pytest.mark.parametrize(
    ("device", "native", "fp16", "want"),
    [
        ("cuda:8.0", True, False, "bf16"),   # A100/H100: native bf16
        ("cuda:7.5", False, False, "fp16"),  # T4: fp16 with loss scaling
        ("cuda:7.0", False, False, "fp16"),  # V100
        ("cuda:6.0", False, False, "fp32"),  # P100: no fast half precision
        ("cpu", True, False, "bf16"),    # avx512_bf16 / AMX
        ("cpu", False, False, "fp32"),
        ("cpu", True, True, "fp16"),     # an explicit fp16 wins over auto
        ("mps", False, False, "fp32"),
    ],
)
def test_bf16_auto_follows_the_hardware(monkeypatch, device, native, fp16, want):
    monkeypatch.setattr(acceleration, "native_bf16", lambda d: native)
    if device.startswith("cuda:"):  # the GPU rule reads the compute capability (archlab.train.precision)
        major, minor = map(int, device[5:].split("."))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (major, minor))
        device = "cuda"
    assert resolve_precision("auto", fp16, device) == want


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setattr(acceleration, "native_bf16", lambda d: False)
    assert resolve_precision(True, False, "cpu") == "bf16"
    assert resolve_precision(False, False, "cuda") == "fp32"
    assert resolve_precision(False, True, "cuda") == "fp16"
    with pytest.raises(ValueError, match="cannot both be true"):
        TrainConfig(bf16=True, fp16=True)
    assert TrainConfig(fp16=True).bf16 is False  # an explicit fp16 settles what auto would pick


def test_cpu_bf16_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("ARCHLAB_NATIVE_BF16")
    monkeypatch.setattr(hardware.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not hardware.native_bf16("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert hardware.native_bf16("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert hardware.native_bf16("cpu")
    monkeypatch.setenv("ARCHLAB_NATIVE_BF16", "0")
    assert not hardware.native_bf16("cpu")


# ------------------------------------------------------------------------------------------ compile


def test_compile_rule(monkeypatch):
    monkeypatch.setattr(acceleration, "expected_compile_seconds", lambda device_type, eager: 30.0)
    assert CompileDecision("auto", MIN_STEPS - 1, "cpu").decided is False  # tiny runs never compile
    assert CompileDecision(True, 5, "cpu").decided is True
    assert CompileDecision(False, 10_000, "cpu").decided is False
    # 1000 steps of 1 s: saves 995 * 1 * (1 - 1/1.2) = 166 s > 30 s
    slow = CompileDecision("auto", 1000, "cpu")
    decisions = [slow.observe(1.0, i + 1) for i in range(PROBE_STEPS)]
    assert decisions[:-1] == [None] * (PROBE_STEPS - 1) and decisions[-1] is True
    # 1000 steps of 0.05 s: saves ~8 s < 30 s
    fast = CompileDecision("auto", 1000, "cpu")
    assert [fast.observe(0.05, i + 1) for i in range(PROBE_STEPS)][-1] is False
    assert "expected compile time" in fast.reason
    # a model that says why not stays eager under auto, however long the run; an explicit true still compiles
    from archlab.models import HopeConfig, HopeForCausalLM
    tiny = dict(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    why = HopeForCausalLM(HopeConfig(**tiny)).compile_auto_opt_out
    assert why and not HopeForCausalLM(HopeConfig(block_type="transformer", **tiny)).compile_auto_opt_out
    hope = CompileDecision("auto", 10_000, "cpu", model_opts_out=why)
    assert hope.decided is False and hope.reason == f"auto: {why}" and hope.observe(1.0, 1) is False
    assert CompileDecision(True, 10_000, "cpu", model_opts_out=why).decided is True


def test_compile_cost_is_remembered_in_eager_steps_so_a_busy_machine_does_not_mislead_a_quiet_one(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.setattr(acceleration, "cache_dir", lambda: tmp_path)
    assert acceleration.expected_compile_seconds("cpu", 0.5) == acceleration.DEFAULT_COMPILE_SECONDS["cpu"]
    (tmp_path / acceleration.COMPILE_FILE).write_text('{"cpu": 798.67}')  # the old format, measured under load
    assert acceleration.expected_compile_seconds("cpu", 0.5) == acceleration.DEFAULT_COMPILE_SECONDS["cpu"]
    acceleration.remember_compile_seconds("cpu", 400.0, 4.0)  # a loaded machine: compile and steps both slow
    assert acceleration.expected_compile_seconds("cpu", 0.4) == pytest.approx(40.0)  # quiet: 100 steps of 0.4 s
    quiet = CompileDecision("auto", 10_000, "cpu")  # what the benchmark's default row saw: 0.408 s steps
    assert [quiet.observe(0.408, i + 1) for i in range(PROBE_STEPS)][-1] is True


def test_a_matmul_peak_cached_on_a_busy_machine_is_measured_again_once_beaten(tmp_path, monkeypatch):
    from archlab import hardware

    monkeypatch.setattr(hardware, "cache_dir", lambda: tmp_path)
    measured = iter([17e9, 170e9])
    monkeypatch.setattr(hardware, "_measure_peak", lambda device, dtype, seconds: next(measured))
    assert hardware.matmul_peak_flops("cpu") == 17e9  # first measurement, under load
    assert hardware.matmul_peak_flops("cpu", at_least=10e9) == 17e9  # plausible: cached
    assert hardware.matmul_peak_flops("cpu", at_least=160e9) == 170e9  # MFU would exceed 100%: measured again
    assert hardware.matmul_peak_flops("cpu") == 170e9  # the best is kept


# ------------------------------------------------------------------------------------------ FLOPs


def test_flops_per_token_counts_every_matmul_including_head_and_attention():
    """Counted FLOPs match nanoGPT's 6 N + 12 L d T (N with the tied head) within the bias/norm terms."""
    config = ArchlabTransformerConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      position_embedding="rope", bias=False)
    model = ArchlabTransformerForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    seq = 32
    counted = training_flops_per_token(model, seq)
    formula = 6 * n_params + 12 * 2 * 64 * seq
    assert counted == pytest.approx(formula, rel=0.01)
    assert all(p.grad is None for p in model.parameters())  # the count leaves no gradient behind


def test_flops_counting_leaves_the_rng_alone():
    model = tiny_decoder(64, dropout=0.1)
    torch.manual_seed(3)
    training_flops_per_token(model, 16)
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(3))


# ------------------------------------------------------------------------------------------ runs


def _run(tmp_path, corpus_dir, name: str, steps: int, **train) -> RunDir:
    cfg = tiny_run_config(corpus_dir, max_steps=steps, logging_steps=1, **train)
    cfg["eval"] = []
    run = RunDir(tmp_path / name)
    assert run_one(RunConfig.parse(cfg), run).status == "done"
    return run


def _losses(run: RunDir) -> list[float]:
    return [r["loss"] for r in run.metrics.read() if "loss" in r]


def test_summary_and_env_record_precision_flops_and_mfu(tmp_path, corpus_dir):
    run = _run(tmp_path, corpus_dir, "fp32", 4)
    summary = run.summary()
    assert summary["precision"] == "fp32" and summary["torch_compile"] is False  # 4 steps: auto never compiles
    assert summary["flops_per_token"] > 0
    assert summary["train_flops"] == pytest.approx(summary["flops_per_token"] * summary["tokens_seen"])
    env = json.loads((run.path / "env.json").read_text())
    assert env["precision"] == "fp32" and env["matmul_peak_flops"] > 0
    logged = [r for r in run.metrics.read() if "loss" in r]
    assert all(0 < r["mfu"] < 1 for r in logged)


def test_bf16_tracks_fp32_over_30_steps(tmp_path, corpus_dir):
    """bf16 autocast (fp32 master weights) stays within 2% of the fp32 loss at every one of 30 steps."""
    fp32 = _losses(_run(tmp_path, corpus_dir, "fp32", 30, bf16=False))
    bf16_run = _run(tmp_path, corpus_dir, "bf16", 30, bf16=True)
    bf16 = _losses(bf16_run)
    assert bf16_run.summary()["precision"] == "bf16"
    assert len(fp32) == len(bf16) == 30
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(a - b) <= 0.02 * a, (a, b)
    assert bf16[-1] < bf16[0] - 0.5  # it did learn


@pytest.mark.slow
def test_compiled_training_tracks_eager_and_resumes(tmp_path, corpus_dir):
    """20 compiled steps follow the eager loss curve; the checkpoint has plain parameter names and resumes."""
    eager = _losses(_run(tmp_path, corpus_dir, "eager", 20, torch_compile=False))
    run = _run(tmp_path, corpus_dir, "compiled", 20, torch_compile=True, save_steps=10)
    compiled = _losses(run)
    for a, b in zip(eager, compiled, strict=True):
        assert abs(a - b) <= 1e-3 * a, (a, b)
    events = [r for r in run.metrics.read() if r.get("event") == "torch_compile"]
    assert events and events[0]["compile_seconds"] >= 0
    assert run.summary()["torch_compile"] is True
    from safetensors import safe_open

    for file in run.checkpoints.rglob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            assert not any("_orig_mod" in k for k in f.keys())
    # resume a compiled run from its step-10 checkpoint: it ends where the uninterrupted one did
    cfg = tiny_run_config(corpus_dir, max_steps=20, logging_steps=1, torch_compile=True, save_steps=10)
    cfg["eval"] = []
    resumed = RunDir(tmp_path / "resumed")
    resumed.path.mkdir()
    import shutil

    step10 = next(p for p in run.checkpoints.iterdir() if p.name.startswith("step-") and int(p.name[5:]) == 10)
    shutil.copytree(step10, resumed.checkpoints / step10.name)
    assert run_one(RunConfig.parse(cfg), resumed).status == "done"
    assert any("resumed from step-" in r.get("event", "") and "10" in r.get("event", "") for r in resumed.metrics.read())
    assert _losses(resumed)[-1] == pytest.approx(compiled[-1], rel=1e-3)
