"""Data settings of a run: where the text comes from, how it is tokenized, formatted and batched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from archlab.config import Config, later_defaults


class WordLevelOptions(Config):
    """Seed 002's closed-vocabulary word tokenizer and line windows (``data.tokenizer: word_level``).

    The window length is ``data.max_length`` (64 for WikiText, 128 for Dolly); examples are padded to it.
    """

    vocab_size: int = Field(1000, ge=5, description="vocabulary incl. PAD, UNK, BOS, EOS: the vocab_size - 4 most "
                            "frequent lowercase training words; every other word becomes UNK")
    unit: Literal["line", "record"] = Field("line", description="'line': every text line is one sequence (WikiText); "
                                            "'record': a whole (formatted) record is one sequence (Dolly)")
    min_words: int = Field(5, ge=1, description="sequences with fewer words are dropped")
    stride: int | None = Field(32, ge=1, description="a sequence longer than max_length is cut into windows of "
                               "max_length tokens starting every 'stride' tokens (seed: 64 / 32); None truncates it")


class DataConfig(Config):
    source: str = Field(
        "embedded:shakespeare",
        description="'embedded:<name>' (shipped corpus), a Hugging Face dataset id, or a local file/folder "
        "(.txt, .json, .jsonl, .parquet)",
    )
    name: str | None = Field(None, description="dataset configuration name for hub datasets (e.g. wikitext-103-raw-v1)")
    format: Literal["auto", "text", "alpaca", "dolly", "tokenized"] = Field(
        "auto", description="record format: plain text, alpaca (instruction/input/output), dolly "
        "(instruction/context/response) or tokenized (input_ids, e.g. a tokenized-grouped hub dataset); auto "
        "detects from the fields"
    )
    text_field: str = Field("text", description="field holding the text of 'text' records")
    template: Literal["plain", "alpaca", "labeled"] = Field(
        "plain", description="instruction prompt layout: 'plain' joins instruction, input and answer by newlines "
        "(as seed 000's TPTT), 'alpaca' uses the '### Instruction:' template, 'labeled' writes 'Instruction: "
        "...\\nContext: ...\\nResponse: ...' (seed 002's Dolly; no Context line when it is empty)"
    )
    mask_prompt: bool = Field(False, description="exclude the instruction prompt from the loss (answer tokens only)")
    tokenizer: str = Field("embedded", description="'embedded' (BPE shipped with archlab), 'bytes', 'gpt2' / 'gpt2+mask' "
                           "(GPT-2's BPE, shipped; +mask adds seed 001's <|MASK|>), 'word_level' (seed 002: closed "
                           "word vocabulary built on the training split, see data.word_level), or an HF tokenizer id / "
                           "local path")
    word_level: WordLevelOptions = Field(default_factory=WordLevelOptions, description="options of "
                                         "tokenizer='word_level' (vocab_size, unit, min_words, stride)")
    add_mask_token: bool = Field(False, description="give the tokenizer a mask token '<|mask|>' when it has none "
                                 "(set for train.objective=masked_diffusion runs; a tokenizer's own mask token is "
                                 "kept)")
    packing: Literal["group", "pad"] = Field(
        "group", description="'group' concatenates documents and cuts fixed blocks (tokenized-grouped); 'pad' keeps "
        "one example per row, padded per batch"
    )
    block_size: int = Field(256, ge=2, description="tokens per block when packing='group'")
    max_length: int = Field(512, ge=2, description="truncation length of an example when packing='pad'")
    padding: Literal["longest", "max_length"] = Field("longest", description="pad each batch to its longest example "
                                                      "or always to max_length (packing='pad')")
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of the training documents to use (seeded)")
    max_train_samples: int | None = Field(None, ge=1, description="cap on training documents after 'fraction'")
    validation_fraction: float = Field(0.05, ge=0, lt=1, description="held-out share when the source has no "
                                       "validation split")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="test share when the source has no test split")
    validation_samples: int | None = Field(None, ge=1, description="exact number of validation documents to split "
                                           "off instead of validation_fraction (seed 000: 2)")
    test_samples: int | None = Field(None, ge=1, description="exact number of test documents to split off")
    max_eval_blocks: int = Field(64, ge=1, description="cap on validation blocks/examples used by loss evals")
    split_seed: int = Field(42, description="seed of the document shuffle that makes the splits and the fraction")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be < 1")
        if self.tokenizer == "word_level" and (self.packing != "pad" or self.mask_prompt):
            raise ValueError("tokenizer 'word_level' makes one padded example per line window: set packing: pad "
                             "(the window is max_length) and leave mask_prompt false")
        return self


# The keys runs were first named with; keys added later are left out of the run id at their defaults
# (see archlab.train.config.FIRST_TRAIN_KEYS).
FIRST_DATA_KEYS = frozenset(
    "source name format text_field template mask_prompt tokenizer add_mask_token packing block_size max_length "
    "padding fraction max_train_samples validation_fraction test_fraction validation_samples test_samples "
    "max_eval_blocks split_seed".split())
NOT_IN_RUN_ID = later_defaults(DataConfig, FIRST_DATA_KEYS)
