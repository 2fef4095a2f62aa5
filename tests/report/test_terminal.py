"""The terminal: tables fit 80 columns without cutting a number; compare and status read run folders."""

from __future__ import annotations

import re

import pytest
import yaml
from rich.console import Console
from tests.conftest import cli as run_cli

from archlab.report.terminal import fit_table
from archlab.rundir import RunDir


def render(renderable, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("runs", [2, 9])
def test_a_wide_table_fits_80_columns_and_keeps_every_number_whole(runs):
    header = ["Variant", "What changed", "Status", "Params", "Non-emb", "FLOPs", "loss", "bits_per_byte", "accuracy",
              "train_tokens_per_second", "Δ bits_per_byte"]
    body = [[f"variant number {i}", f"positions=rope, optimizer=muon{i}", "done", "1.86M", "793k", "≈340G",
             f"6.49{i} [6.43, 6.56]", f"2.966{i} [2.9, 3.03]", "0.1531 [0.147, 0.16]", f"{12345 + i:,}",
             f"-0.00362{i}"] for i in range(runs)]
    text = render(fit_table("Position encodings", header, body, 80))
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for row in body:
        for number in (row[3], row[5], f"{12345 + int(row[0][-1]):,}", row[-1], row[6].split()[0], "[6.43,6.56]"):
            assert number in text, (number, text)
    assert "bpb = bits_per_byte" in text and "tok/s = train_tokens_per_second" in text  # the legend
    cut = [line for line in text.splitlines() if "okens_p" in line and "train_tokens_per_second" not in line]
    assert not cut, cut  # no header cut letter by letter


def _run(root, plan: str, run_id: str, config: dict, loss: tuple[float, float, float], status: str = "done",
         error: str = ""):
    run = RunDir(root / plan / run_id)
    run.path.mkdir(parents=True)
    run.write_config(config)
    run.metrics.append({"step": 4, "loss": loss[0] + 0.5})
    if status == "done":
        run.write_eval("loss", {"eval": "loss", "metrics": {"loss": loss[0], "bits_per_byte": loss[0] / 2}, "n": 100,
                                "ci95": {"loss": [loss[1], loss[2]]}, "details": {}})
    if error:
        run.record_error(f"Traceback (most recent call last):\n{error}\n")
    run.set_status(status, step=4, message=error)
    return run


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, *args, width=80)


def test_compare_prints_the_config_diff_and_deltas_with_their_verdict(monkeypatch, capsys, tmp_path):
    base = {"model": {"config": {"position_embedding": "learned", "hidden_size": 32}}, "train": {"max_steps": 4}}
    other = {"model": {"config": {"position_embedding": "rope", "hidden_size": 32}}, "train": {"max_steps": 4}}
    _run(tmp_path, "p", "learned-aaa", base, (5.0, 4.9, 5.1))
    _run(tmp_path, "p", "rope-bbb", other, (4.5, 4.45, 4.55))
    code, out = cli(monkeypatch, capsys, "compare", "p/learned-aaa", "rope", "--runs-dir", str(tmp_path))
    assert code == 0, out
    assert re.search(r"model\.config\.position_embedding\s+learned\s+rope", out) and "max_steps" not in out
    assert re.search(r"loss\.loss\s+5\s+4\.5\s+-0\.5\s+B better", out), out
    assert "[4.9,5.1]" in out and max(len(line) for line in out.splitlines()[2:]) <= 80  # after the two paths
    code, out = cli(monkeypatch, capsys, "compare", "p/learned-aaa", "nothing", "--runs-dir", str(tmp_path))
    assert code == 2 and "no run folder 'nothing'" in out and len(out.strip().splitlines()) == 1


def test_status_summarises_a_plan_without_running_it(monkeypatch, capsys, tmp_path, corpus_dir):
    from archlab.plan import expand, load_plan

    plan_file = tmp_path / "st.yaml"
    plan_file.write_text(yaml.safe_dump({
        "name": "st", "defaults": {"data": {"source": str(corpus_dir), "tokenizer": "bytes"},
                                   "model": {"config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                        "num_attention_heads": 2}}},
        "axes": {"pos": {"learned": {"model.config.position_embedding": "learned"},
                         "rope": {"model.config.position_embedding": "rope"},
                         "nope": {"model.config.position_embedding": "none"}}},
        "matrix": {"pos": ["learned", "rope", "nope"]}, "baseline": {"pos": "learned"}}))
    specs = expand(load_plan(plan_file), None, {})
    runs = tmp_path / "runs"
    _run(runs, "st", specs[0].id, specs[0].config.to_dict(), (5.0, 4.9, 5.1))
    _run(runs, "st", specs[1].id, specs[1].config.to_dict(), (5.0, 4.9, 5.1), status="failed",
         error="ValueError: broke at step 4")
    code, out = cli(monkeypatch, capsys, "status", str(plan_file), "--runs-dir", str(runs))
    assert code == 0, out
    assert re.search(r"learned\s+done\s+4\s+5\.5\s+5\s", out), out  # default headline: loss.loss
    assert "ValueError: broke at step 4" in out and re.search(r"nope\s+pending", out)
    assert "1 done, 1 failed, 1 pending" in out


def test_the_live_table_shows_step_loss_and_eta_of_a_running_run(tmp_path):
    from types import SimpleNamespace

    from archlab.plan import RunSpec, RunStore
    from archlab.report.live import LiveRun, PlanTable

    specs = [RunSpec(id="a-1", labels={"pos": "a"}, config=None), RunSpec(id="b-2", labels={"pos": "b"}, config=None)]
    table = PlanTable(specs, RunStore(tmp_path, "p"), "p: 2 run(s)")
    callback = LiveRun(table.rows["a-1"])
    trainer = SimpleNamespace(state=SimpleNamespace(step=0, total_steps=100))
    callback.on_train_begin(trainer)
    trainer.state.step = 10
    callback.on_step_end(trainer)
    callback.on_log(trainer, {"loss": 3.25})
    text = render(table)
    assert re.search(r"a\s+running\s+10/100\s+3\.25\s+\d+s", text), text
    assert re.search(r"b\s+pending\s+—", text)
