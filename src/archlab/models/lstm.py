"""An LSTM language model as an HF model: seed 002's recurrent baseline (the New-LLM repository's LSTM LM).

embedding -> nn.LSTM (``num_hidden_layers`` layers, dropout between them) -> dropout -> Linear head. The
(h, c) state of every layer after the last token lives in the HF ``Cache`` (``states_of(cache, 0)``, stored
batch-first as [B, layers, hidden]), so ``generate`` continues from it and equals one full forward. Padded
positions (attention_mask 0, e.g. a left-padded prompt) carry the state unchanged, step by step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from archlab.nn.cache import states_of
from archlab.nn.loss import causal_lm_loss


class LSTMLMConfig(PretrainedConfig):
    """Configuration of :class:`LSTMLMForCausalLM` (embedding width, LSTM width and depth, dropout).

    The defaults (embedding 256, two layers of 376, vocab 1000: 2,720,552 parameters) match New-LLM L=6
    (2,739,432) within 1%.
    """

    model_type = "archlab_lstm_lm"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(self, vocab_size: int = 1000, embed_dim: int = 256, hidden_size: int = 376,
                 num_hidden_layers: int = 2, dropout: float = 0.1, tie_word_embeddings: bool = False,
                 pad_token_id: int | None = None, bos_token_id: int | None = None, eos_token_id: int | None = None,
                 **kwargs: Any):
        if num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers={num_hidden_layers}: an LSTM needs at least one layer")
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.dropout = dropout
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id,
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


class TraceableLSTM(nn.RNNBase):
    """nn.LSTM (batch first, same parameters and names, same kernel) that torch.compile traces as one graph.

    Dynamo refuses ``nn.LSTM`` instances (``torch._dynamo.config.allow_rnn``), not other ``RNNBase`` modules.
    Eager calls run the same fused op as ``nn.LSTM``; under compile the layers are unrolled into LSTM cells,
    time-major with dropout on each non-last layer's whole output, as the fused op does, so that a seeded
    compiled step draws the same dropout masks as the eager one.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0):
        super().__init__("LSTM", input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        if not torch.compiler.is_compiling():
            out, h, c = torch._VF.lstm(x, state, self._flat_weights, True, self.num_layers, self.dropout,
                                       self.training, False, True)
            return out, (h, c)
        layer_in, hs, cs = x.transpose(0, 1), [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._flat_weights[4 * layer : 4 * layer + 4]
            h, c = state[0][layer], state[1][layer]
            x_gates = F.linear(layer_in, w_ih, b_ih)  # all steps at once; only h @ W_hh is sequential
            outs = []
            for t in range(layer_in.shape[0]):
                i, f, g, o = (x_gates[t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            layer_in = torch.stack(outs)
            hs.append(h)
            cs.append(c)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        return layer_in.transpose(0, 1), (torch.stack(hs), torch.stack(cs))


class LSTMLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LSTMLMConfig
    base_model_prefix = "model"

    def __init__(self, config: LSTMLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = TraceableLSTM(config.embed_dim, config.hidden_size, config.num_hidden_layers,
                                  dropout=config.dropout if config.num_hidden_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's defaults (uniform(+-1/sqrt(H)) for the LSTM), written with nn.init for from_pretrained."""
        if isinstance(module, nn.RNNBase):
            bound = 1 / math.sqrt(module.hidden_size)
            for weight in module.parameters():
                nn.init.uniform_(weight, -bound, bound)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            nn.init.uniform_(module.bias, -1 / math.sqrt(module.weight.shape[1]), 1 / math.sqrt(module.weight.shape[1]))
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight)

    def _run(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None,
             keep: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if keep is None:
            return self.lstm(x, state)
        b = x.shape[0]
        if state is None:
            zeros = x.new_zeros(self.config.num_hidden_layers, b, self.config.hidden_size)
            state = (zeros, zeros)
        outs = []
        for t in range(x.shape[1]):  # padded steps keep the state: one step at a time
            out, (h, c) = self.lstm(x[:, t : t + 1], state)
            k = keep[:, t].view(1, b, 1)
            state = (torch.where(k, h, state[0]), torch.where(k, c, state[1]))
            outs.append(out)
        return torch.cat(outs, 1), state

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        if use_cache is None:
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        states = states_of(cache, 0) if use_cache else None
        state = None
        if states is not None and states.get("h") is not None:  # stored batch-first; nn.LSTM wants layers first
            state = (states.get("h").transpose(0, 1).contiguous(), states.get("c").transpose(0, 1).contiguous())
        keep = None
        # under compile a given mask is always applied: reading whether it pads would break the graph
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            keep = attention_mask[:, -t:].bool()
        out, (h, c) = self._run(x, state, keep)
        if states is not None:
            states.set("h", h.transpose(0, 1))
            states.set("c", c.transpose(0, 1))
            states.seen_tokens += t
        if logits_to_keep:
            out = out[:, -logits_to_keep:]
        logits = self.lm_head(self.dropout(out))
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)
