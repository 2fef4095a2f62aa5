"""Turn records into (prompt, completion) text pairs: plain text, alpaca- and dolly-style instructions."""

from __future__ import annotations

from typing import Any

from archlab.errors import ArchlabError

ALPACA_KEYS = ("instruction", "input", "output")
DOLLY_KEYS = ("instruction", "context", "response")


def detect_format(record: dict[str, Any], text_field: str) -> str:
    if "input_ids" in record:
        return "tokenized"
    if all(k in record for k in ("instruction", "output")):
        return "alpaca"
    if all(k in record for k in ("instruction", "response")):
        return "dolly"
    if text_field in record:
        return "text"
    raise ArchlabError(
        f"cannot tell the record format from its fields {sorted(record)}; set data.format "
        f"(tokenized needs input_ids, text needs data.text_field, alpaca needs instruction/input/output, dolly instruction/context/response)"
    )


def to_prompt_completion(record: dict[str, Any], fmt: str, text_field: str, template: str) -> tuple[str, str]:
    """('', text) for plain text; (prompt, answer) for instruction records."""
    if fmt == "text":
        return "", str(record[text_field])
    instruction = str(record.get("instruction", "")).strip()
    extra = str(record.get("input" if fmt == "alpaca" else "context", "") or "").strip()
    answer = str(record.get("output" if fmt == "alpaca" else "response", "")).strip()
    if template == "alpaca":
        prompt = f"### Instruction:\n{instruction}\n\n"
        if extra:
            prompt += f"### Input:\n{extra}\n\n"
        return prompt + "### Response:\n", answer
    if template == "labeled":
        prompt = f"Instruction: {instruction}\n" + (f"Context: {extra}\n" if extra else "")
        return prompt + "Response: ", answer
    prompt = instruction + "\n" + (extra + "\n" if extra else "")
    return prompt, answer
