"""Data settings of a run: where the text comes from, how it is tokenized, formatted and batched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from archlab.config import Config


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
    template: Literal["plain", "alpaca"] = Field(
        "plain", description="instruction prompt layout: 'plain' joins instruction, input and answer by newlines "
        "(as seed 000's TPTT), 'alpaca' uses the '### Instruction:' template"
    )
    mask_prompt: bool = Field(False, description="exclude the instruction prompt from the loss (answer tokens only)")
    tokenizer: str = Field("embedded", description="'embedded' (BPE shipped with archlab), 'bytes', 'gpt2' / 'gpt2+mask' "
                           "(GPT-2's BPE, shipped; +mask adds seed 001's <|MASK|>), or an HF "
                           "tokenizer id / local path")
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
        return self
