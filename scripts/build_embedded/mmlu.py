"""``mmlu``: the 282 MMLU dev questions with answers shipped in the lm-eval wheel (flan CoT prompts)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from scripts.build_embedded.common import BuildError, pip_download

LM_EVAL_PIN = "lm_eval==0.4.13"
LM_EVAL_MMLU_MEMBER = "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
LM_EVAL_LICENSE_MEMBER = "lm_eval-0.4.13.dist-info/licenses/LICENSE.md"
# The flan-CoT prompt file stored LaTeX such as "\frac", "\times", "\rightarrow" as JSON
# escapes, so they arrived as control characters; put the backslash back.
_LATEX_CONTROL = {"\x0c": "\\f", "\x08": "\\b", "\x07": "\\a", "\x0b": "\\v", "\r": "\\r", "\t": "\\t"}


def _restore_latex(text: str) -> str:
    for char, escape in _LATEX_CONTROL.items():
        text = re.sub(re.escape(char) + r"(?=[A-Za-z])", lambda _m, e=escape: e, text)
    return text


def parse_mmlu_cot_prompts(prompts: dict[str, str]) -> list[dict]:
    """Each subject's few-shot block -> {subject, description, question, choices, gold, context} records.

    ``description`` is lm-eval's MMLU header (printed once before the shots); ``context`` the question
    in lm-eval's format, so the zero-shot prompt is ``description + context``.
    """
    records = []
    for subject in sorted(prompts):
        body = _restore_latex(prompts[subject]).split("\n\n", 1)[1]
        for block in re.split(r"\n\nQ: ", "\n\n" + body):
            if not block.strip():
                continue
            answer_at = block.rfind("\nA: ")
            options_at = block.rfind("\n(A)", 0, answer_at)
            gold = re.search(r"The answer is \(([A-J])\)", block[answer_at:])
            if answer_at < 0 or options_at < 0 or gold is None:
                raise BuildError(f"MMLU {subject}: cannot parse a question block: {block[:80]!r}")
            parts = re.split(r"\(([A-J])\)\s*", block[options_at + 1 : answer_at])[1:]
            letters, choices = parts[0::2], [c.strip() for c in parts[1::2]]
            question = block[:options_at].strip()
            name = subject.replace("_", " ")
            records.append({
                "subject": subject,
                "description": f"The following are questions (with answers) about {name}.\n\n",
                "question": question,
                "choices": choices,
                "gold": letters.index(gold.group(1)),
                "context": f"Question: {question}\nAnswer:",
            })
    return records


def build_mmlu_dev(workdir: Path) -> tuple[list[dict], dict, str]:
    """(records, source info, licence text of the wheel)."""
    wheel = pip_download(LM_EVAL_PIN, workdir / "pypi", "lm_eval-0.4.13-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        prompts = json.loads(zf.read(LM_EVAL_MMLU_MEMBER).decode("utf-8"))
        licence = zf.read(LM_EVAL_LICENSE_MEMBER).decode("utf-8")
    records = parse_mmlu_cot_prompts(prompts)
    if len(records) != 282:
        raise BuildError(f"expected 282 MMLU dev questions in {LM_EVAL_MMLU_MEMBER}, parsed {len(records)}")
    return records, {"package": LM_EVAL_PIN, "archive": wheel.name, "member": LM_EVAL_MMLU_MEMBER,
                     "subjects": len(prompts), "questions": len(records)}, licence
