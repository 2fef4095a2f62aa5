"""Data: sources, tokenizers, formatting, packing, splits, cache and the resumable sampler."""

from archlab.data.build import DataBundle, TokenSplit, build_data
from archlab.data.config import DataConfig
from archlab.data.loader import EpochSampler
from archlab.data.tokenizers import encode_document, leading_special_ids, load_tokenizer, token_byte_lengths

__all__ = ["DataBundle", "DataConfig", "EpochSampler", "TokenSplit", "build_data", "encode_document",
           "leading_special_ids", "load_tokenizer", "token_byte_lengths"]
