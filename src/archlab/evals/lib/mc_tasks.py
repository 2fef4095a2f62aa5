"""Multiple-choice tasks for the ``mc`` eval: local jsonl, lm-eval YAML, lm-eval registry names, cloze.

Every source becomes a list of ``MCDoc``: the (context, continuation) requests lm-eval would make, the
choice strings whose character lengths normalise ``acc_norm``, and the gold index. Tasks loaded through
lm-eval also keep the lm-eval ``Task`` so its own ``process_results`` computes the metrics.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.errors import ArchlabError, did_you_mean
from archlab.evals.lib.texts import corpus_documents, embedded_corpus_name, read_eval_set, sentences
from archlab.files import jsonl_problem
from archlab.offline import hub_reachable

EMBEDDED_TASKS = {"mmlu_dev": ("mmlu", "dev")}


@dataclass
class MCDoc:
    doc_id: int
    requests: list[tuple[str, str]]  # (context, target_delimiter + choice), one per choice
    choices: list[str]
    gold: int
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class MCTask:
    name: str
    docs: list[MCDoc]
    source: str
    lm_eval_task: Any = None  # lm_eval.api.task.Task when loaded through lm-eval


def load_task(spec: str, *, limit: int | None, num_fewshot: int, delimiter: str, seed: int,
              cloze: dict[str, Any]) -> MCTask:
    """Resolve ``spec``: an embedded task, ``cloze[:corpus]``, a .jsonl/.yaml path, or an lm-eval name."""
    if spec in EMBEDDED_TASKS:
        records = read_eval_set(*EMBEDDED_TASKS[spec])
        docs = docs_from_records(records, delimiter, num_fewshot)
        return MCTask(spec, docs[:limit], f"embedded:{'/'.join(EMBEDDED_TASKS[spec])}")
    if spec == "cloze" or spec.startswith("cloze:"):
        corpus = spec.partition(":")[2] or "wiki"
        docs = cloze_docs(corpus, seed=seed, delimiter=delimiter, **cloze)
        return MCTask(spec, docs[:limit], f"cloze over embedded:{corpus} held-out sentences")
    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json", ".gz"):
        if not path.exists():
            raise ArchlabError(f"mc task file not found: {spec}")
        docs = docs_from_records(_read_jsonl(path), delimiter, num_fewshot)
        return MCTask(path.stem, docs[:limit], str(path))
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ArchlabError(f"mc task file not found: {spec}")
        name = _yaml_task_name(path)
        return _from_lm_eval(name, limit, num_fewshot, include_path=path.parent, source=str(path))
    return _from_lm_eval(spec, limit, num_fewshot, include_path=None, source="lm-eval registry")


def check_task(spec: str) -> None:
    """What ``archlab plan`` can check of a task without loading it (raises ArchlabError): an embedded cloze corpus,
    a task file that exists and parses, or an lm-eval task name, whose dataset needs the hub."""
    if spec in EMBEDDED_TASKS:
        return
    if spec == "cloze" or spec.startswith("cloze:"):
        try:
            embedded_corpus_name(spec.partition(":")[2] or "wiki")
        except ValueError as exc:
            raise ArchlabError(f"mc task '{spec}': {exc}") from None
        return
    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json", ".gz", ".yaml", ".yml"):
        if not path.is_file():
            raise ArchlabError(f"mc task file not found: {spec}")
        problem = jsonl_problem(path, objects=True) if path.suffix == ".jsonl" else None
        if problem:
            raise ArchlabError(f"mc task file {spec}: {problem}")
        if path.suffix in (".yaml", ".yml"):
            _yaml_task_name(path)
        return
    _require_hub(spec)


def _require_hub(name: str) -> None:
    """An lm-eval registry task loads its dataset from the hub: refused in seconds when it cannot be reached."""
    offline_cache = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if not offline_cache and not hub_reachable():
        raise ArchlabError(f"mc task '{name}'{did_you_mean(name, [*EMBEDDED_TASKS, 'cloze'])} is not embedded "
                           f"({', '.join(EMBEDDED_TASKS)}, cloze) or a file, and as an lm-eval task it needs its "
                           f"dataset from the Hugging Face hub, which is not reachable; use a .jsonl of "
                           f"{{context, choices, gold}}, an lm-eval YAML with dataset_path: json, task: mmlu_dev or "
                           f"task: cloze")


def _read_jsonl(path: Path) -> list[dict]:
    import gzip

    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        problem = jsonl_problem(path) if path.suffix == ".jsonl" else None
        raise ArchlabError(f"{path}: not JSON lines ({problem or exc})") from None


def docs_from_records(records: list[dict], delimiter: str, num_fewshot: int) -> list[MCDoc]:
    """{context, choices, gold} records (optional: subject, description) -> docs, k-shot as lm-eval makes them.

    The prompt is ``description + shot_1 + "\n\n" + ... + shot_k + "\n\n" + context``: the description
    (e.g. MMLU's "The following are questions (with answers) about <subject>.\n\n") once, then each shot
    as ``context + delimiter + gold choice``. The shots are the first ``k`` other records of the same
    subject, in file order: lm-eval's ``first_n`` sampler, which its MMLU tasks use (each subject is its
    own lm-eval task, so shots never cross subjects).
    """
    for i, r in enumerate(records):
        missing = {"context", "choices", "gold"} - set(r)
        if missing:
            raise ArchlabError(f"mc record {i} lacks {sorted(missing)}; expected {{context, choices, gold}}")
    by_subject: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_subject[r.get("subject")].append(i)
    docs = []
    for i, r in enumerate(records):
        shots = [j for j in by_subject[r.get("subject")] if j != i][:num_fewshot]
        labelled = "".join(f"{records[j]['context']}{delimiter}{records[j]['choices'][int(records[j]['gold'])]}\n\n"
                           for j in shots)  # lm-eval's default fewshot_delimiter after every shot
        context = str(r.get("description", "")) + labelled + r["context"]
        choices = [str(c) for c in r["choices"]]
        docs.append(MCDoc(i, [(context, delimiter + c) for c in choices], choices, int(r["gold"]), r))
    return docs


def cloze_docs(corpus: str, *, seed: int, delimiter: str, items: int, choices: int,
               context_sentences: int) -> list[MCDoc]:
    """The true next sentence among ``choices`` sentences drawn from the same held-out document."""
    rng = random.Random(seed)
    pool = [s for s in (sentences(d) for d in corpus_documents(corpus)) if len(s) > context_sentences + choices]
    if not pool:
        raise ArchlabError(f"cloze: embedded:{corpus} has no held-out document with enough sentences")
    docs = []
    for i in range(items):
        sents = rng.choice(pool)
        at = rng.randrange(context_sentences, len(sents))
        window = set(range(at - context_sentences, at + 1))
        others = rng.sample([j for j in range(len(sents)) if j not in window], choices - 1)
        options = [sents[at]] + [sents[j] for j in others]
        order = list(range(choices))
        rng.shuffle(order)
        shuffled = [options[k] for k in order]
        context = " ".join(sents[at - context_sentences : at])
        docs.append(MCDoc(i, [(context, delimiter + c) for c in shuffled], shuffled, order.index(0)))
    return docs


def task_code_file(spec: str) -> Path | None:
    """The first YAML lm-eval would load with task ``spec`` that imports Python (``!function``), if any.

    lm-eval indexes every YAML under the task file's folder, so each one there counts, not only ``spec``.
    """
    path = Path(spec).expanduser()
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    for candidate in sorted([*path.parent.rglob("*.yaml"), *path.parent.rglob("*.yml")]):
        try:
            if "!function" in candidate.read_text(encoding="utf-8", errors="replace"):
                return candidate
        except OSError:
            continue
    return None


def _yaml_task_name(path: Path) -> str:
    match = re.search(r"^task:\s*['\"]?([^'\"\s#]+)", path.read_text(encoding="utf-8"), re.M)
    if not match:
        raise ArchlabError(f"{path}: an lm-eval task YAML needs a top-level 'task: NAME'")
    return match.group(1)


def _from_lm_eval(name: str, limit: int | None, num_fewshot: int, include_path: Path | None,
                  source: str) -> MCTask:
    from lm_eval.tasks import TaskManager, get_task_dict

    if include_path is None:  # checked before indexing lm-eval's registry, so an offline run fails in seconds
        _require_hub(name)
    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path \
        else TaskManager()
    if name not in manager.all_tasks:
        raise ArchlabError(f"mc task '{name}' is neither an embedded task ({', '.join(EMBEDDED_TASKS)}, cloze), "
                           f"a .jsonl/.yaml file, nor an lm-eval task name")
    try:
        task = get_task_dict([name], manager)[name]
        task.set_config(key="num_fewshot", value=num_fewshot)
        task.set_fewshot_seed(seed=1234)  # lm_eval.simple_evaluate's default fewshot_random_seed
        task.build_all_requests(limit=limit, rank=0, world_size=1)
    except ArchlabError:
        raise
    except Exception as exc:  # datasets/lm-eval raise many types for a missing or malformed dataset
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ArchlabError(f"mc task '{name}' could not be loaded by lm-eval ({type(exc).__name__}: {first})") from None
    if getattr(task, "OUTPUT_TYPE", None) != "multiple_choice":
        raise ArchlabError(f"mc task '{name}' has output_type {getattr(task, 'OUTPUT_TYPE', '?')}; mc scores "
                           f"multiple_choice tasks only")
    by_doc: dict[int, list] = defaultdict(list)
    for inst in task.instances:
        by_doc[inst.doc_id].append(inst)
    docs = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda x: x.idx)
        doc = insts[0].doc
        target = task.doc_to_target(doc)
        docs.append(MCDoc(doc_id, [tuple(x.arguments) for x in insts], [str(c) for c in task.doc_to_choice(doc)],
                          target if isinstance(target, int) else -1, doc))
    return MCTask(name, docs, source, lm_eval_task=task)
