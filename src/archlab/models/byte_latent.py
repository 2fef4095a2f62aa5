"""Seed 004's byte latent model ("ionLlama v12"), rebuilt causal: a Hugging Face ``PreTrainedModel``.

bytes -> byte embedding (+ hash n-grams) + causal n-gram conv -> IntegralLNN encoder -> patches (static or
entropy: BLT's rules on a trained byte LM's next-byte entropies) -> mean of each patch's encoder states ->
latent transformer over patches (dilated attention {0, 1, 2, 4, ...}, RoPE) -> the local decoder's byte t
adds the latent of the last patch complete at t -> IntegralLNN decoder -> 256-way (vocab) head.

Causality, part by part (tested byte by byte in tests/models/test_byte_latent.py):
- every conv is left-padded; the IntegralLNN scan runs forward in time;
- whether byte j starts a patch depends on the entropy of predicting j, i.e. on bytes < j (and on where the
  previous patch started); so whether byte t ends a patch (byte t + 1 starts one) is known at t;
- a patch's latent depends on its own bytes and earlier patches only (causal dilated attention);
- the decoder's byte t reads the latent of the last patch that ends at or before t, never the patch still
  open at t (the seed gave each byte its own, unfinished patch's mean, which contains later bytes).

The entropy model (phase 1 of the plan) is any causal byte LM saved with ``save_pretrained``;
``entropy_model_path`` loads it once into a frozen submodule (saved with this model, so the folder need not
exist later). Its context restarts after every newline (BLT). The global threshold is calibrated on the
first training batch so the mean patch length is ``target_patch_size`` (and stored in a buffer), unless
``calibrate_threshold: false``; evaluation always uses the stored value, never the text being scored.

Compile: the entropy model, the calibration and BLT's boundary loop run inside two opaque ops
(``archlab.models.byte_latent_patching``), and the patch count is an unbacked size, so a compiled training step
is one graph (under the trainer's ``compile_scope``) with no padding of the latent sequence.

Decoding: ``generate`` and cached calls continue from the state in the Cache (``states_of(cache, 0)``): conv
windows, IntegralLNN states, the patching state and open patch, the latent keys/values of completed patches
(``archlab.models.byte_latent_decode``); prefill then byte-by-byte steps equal the full forward (tested).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from archlab.models.byte_latent_decode import decode_hidden_states
from archlab.models.byte_latent_patching import (
    build_entropy_model,
    byte_entropies,
    calibrate_once,
    entropy_patches,
    entropy_tensors,
    structure_key,
)
from archlab.nn.byte_latent import (
    CausalNgramConv,
    HashNgramEmbedding,
    IntegralLNNBlock,
    LatentBlock,
    calibrate_threshold,
    patch_ids,
    static_boundaries,
)
from archlab.nn.cache import states_of
from archlab.nn.loss import causal_lm_loss
from archlab.nn.rope import RotaryEmbedding
from archlab.ops import dilated_offsets

PATCHINGS = ("static", "entropy")

# Sizes after the seed's train_cloud.py (d, local layers, latent layers, heads), widened so the totals land near
# the seed's names (tiny ~5M, small ~50M, base ~200M, large ~800M); exact counts: ByteLatentConfig.parameter_count.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=256, num_local_layers=1, num_latent_layers=4, num_attention_heads=4),
    "small": dict(hidden_size=512, num_local_layers=2, num_latent_layers=12, num_attention_heads=8),
    "base": dict(hidden_size=1024, num_local_layers=3, num_latent_layers=12, num_attention_heads=16),
    "large": dict(hidden_size=1536, num_local_layers=4, num_latent_layers=24, num_attention_heads=24),
}


class ByteLatentConfig(PretrainedConfig):
    """Configuration of :class:`ByteLatentForCausalLM`.

    ``size`` (tiny / small / base / large) fills ``hidden_size``, the layer counts and heads unless given.
    ``num_local_layers`` IntegralLNN blocks make the encoder and as many the decoder.
    """

    model_type = "archlab_byte_latent"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 258,
        size: str | None = None,
        hidden_size: int | None = None,
        latent_size: int | None = None,
        num_local_layers: int | None = None,
        num_latent_layers: int | None = None,
        num_attention_heads: int | None = None,
        lnn_kernel: int = 7,
        lnn_decay_init: tuple[float, float] | list[float] = (0.5, 0.99),
        lnn_chunk_size: int = 32,
        ngram_kernel: int = 4,
        hash_ngram_sizes: list[int] | None = None,
        hash_buckets: int = 4096,
        max_offset: int | None = None,
        rope_theta: float = 10000.0,
        patching: str = "entropy",
        patch_size: int = 4,
        max_patch_size: int = 8,
        entropy_threshold: float = 0.6,
        entropy_rel_threshold: float | None = None,
        target_patch_size: float = 4.0,
        calibrate_threshold: bool = True,
        reset_at_newline: bool = True,
        newline_id: int = 10,
        entropy_bos_id: int | None = None,
        entropy_config: dict[str, Any] | None = None,
        entropy_model_path: str | None = None,
        norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | None = 256,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ):
        if size is not None and size not in SIZES:
            raise ValueError(f"size '{size}' unknown; use one of {list(SIZES)}")
        preset = SIZES[size or "tiny"]
        if patching not in PATCHINGS:
            raise ValueError(f"patching must be one of {PATCHINGS}, got '{patching}'")
        if max_patch_size < 1 or patch_size < 1:
            raise ValueError("patch_size and max_patch_size must be >= 1")
        if not 1 <= target_patch_size <= max_patch_size:
            raise ValueError(f"target_patch_size {target_patch_size} must lie in [1, max_patch_size={max_patch_size}]")
        if lnn_kernel < 1 or lnn_chunk_size < 1:
            raise ValueError(f"lnn_kernel ({lnn_kernel}) and lnn_chunk_size ({lnn_chunk_size}) must be >= 1")
        decay = list(lnn_decay_init)
        if len(decay) != 2 or not all(0.0 < x < 1.0 for x in decay):
            raise ValueError(f"lnn_decay_init {decay} must be two per-byte decays in (0, 1): [lowest, highest]")
        if any(n < 1 for n in hash_ngram_sizes or []):
            raise ValueError(f"hash_ngram_sizes {list(hash_ngram_sizes)} must all be >= 1 (bytes per n-gram)")
        self.vocab_size = vocab_size
        self.size = size
        self.hidden_size = hidden_size or preset["hidden_size"]
        self.latent_size = latent_size or self.hidden_size
        self.num_local_layers = num_local_layers if num_local_layers is not None else preset["num_local_layers"]
        self.num_latent_layers = num_latent_layers if num_latent_layers is not None else preset["num_latent_layers"]
        self.num_attention_heads = num_attention_heads or preset["num_attention_heads"]
        self.lnn_kernel, self.lnn_decay_init, self.lnn_chunk_size = lnn_kernel, list(lnn_decay_init), lnn_chunk_size
        self.ngram_kernel = ngram_kernel
        self.hash_ngram_sizes = list(hash_ngram_sizes or [])
        self.hash_buckets = hash_buckets
        self.max_offset = max_offset
        self.rope_theta = rope_theta
        self.patching = patching
        self.patch_size = patch_size
        self.max_patch_size = max_patch_size
        self.entropy_threshold = entropy_threshold
        self.entropy_rel_threshold = entropy_rel_threshold
        self.target_patch_size = target_patch_size
        self.calibrate_threshold = calibrate_threshold
        self.reset_at_newline = reset_at_newline
        self.newline_id = newline_id
        self.entropy_bos_id = entropy_bos_id
        self.entropy_model_path = entropy_model_path
        if entropy_model_path and entropy_config is None:
            try:
                entropy_config = AutoConfig.from_pretrained(entropy_model_path).to_dict()
            except OSError as exc:
                raise ValueError(f"entropy_model_path '{entropy_model_path}' holds no saved model "
                                 f"(config.json): {str(exc).splitlines()[0]}") from None
        if patching == "entropy" and entropy_config is None:
            # an untrained stand-in so shapes and tests work; real runs pass entropy_model_path (plan phase 1)
            entropy_config = _stand_in_entropy_config(vocab_size)
        self.entropy_config = entropy_config
        self.norm_eps = norm_eps
        self.initializer_range = initializer_range
        # a single state layer holds the decoding state (the bytes seen); DynamicCache(config=...) reads these
        self.num_hidden_layers = 1
        self.layer_types = ["linear_attention"]
        kwargs.pop("num_hidden_layers", None)
        kwargs.pop("layer_types", None)
        super().__init__(tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    def plan_problem(self, tokenizer, needs: set[str]) -> str | None:
        """Why a run of this config should not start (checked by ``archlab plan``): entropy patching with the
        untrained stand-in entropy model (no entropy_model_path, from the config or a plan's ``needs``) would
        train on patch boundaries drawn by a random model."""
        if self.patching != "entropy" or self.entropy_model_path or "model.config.entropy_model_path" in needs:
            return None
        if self.entropy_config != _stand_in_entropy_config(self.vocab_size):
            return None  # an entropy_config given on purpose (e.g. a saved model's)
        return ("model.config.patching: entropy needs a trained entropy model: set model.config.entropy_model_path "
                "to its folder, or train it in the plan and pass it with needs: {model.config.entropy_model_path: "
                "<run name>} (plans/byte_latent.yaml), or use patching: static")

    @property
    def bos_for_entropy(self) -> int:
        if self.entropy_bos_id is not None:
            return self.entropy_bos_id
        return self.eos_token_id if self.eos_token_id is not None and self.eos_token_id < self.vocab_size else 0


class ByteLatentPreTrainedModel(PreTrainedModel):
    config_class = ByteLatentConfig
    base_model_prefix = "byte_latent"
    _no_split_modules = ["LatentBlock", "IntegralLNNBlock"]
    _keys_to_ignore_on_load_unexpected = [r"entropy_model\..*rotary.*inv_freq"]

    def _init_weights(self, module: nn.Module) -> None:
        if any(module is m for m in (getattr(self, "entropy_model", None) or nn.Module()).modules()):
            return  # the entropy model is its own model: built and initialised by its own class
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RotaryEmbedding):
            module.reset_parameters()


class ByteLatentForCausalLM(ByteLatentPreTrainedModel, GenerationMixin):
    _input_embed_layer = "embed_bytes"  # HF's embedding accessors look here

    def __init__(self, config: ByteLatentConfig):
        super().__init__(config)
        d, dl, eps = config.hidden_size, config.latent_size, config.norm_eps
        self.embed_bytes = nn.Embedding(config.vocab_size, d)
        self.hash_ngrams = (HashNgramEmbedding(d, config.hash_ngram_sizes, config.hash_buckets)
                            if config.hash_ngram_sizes else None)
        self.ngram_conv = CausalNgramConv(d, config.ngram_kernel)
        lnn = dict(dim=d, kernel=config.lnn_kernel, decay_init=tuple(config.lnn_decay_init),
                   chunk_size=config.lnn_chunk_size, eps=eps)
        self.encoder = nn.ModuleList(IntegralLNNBlock(**lnn) for _ in range(config.num_local_layers))
        self.to_latent = nn.Linear(d, dl)
        self.latent = nn.ModuleList(LatentBlock(dl, config.num_attention_heads, config.rope_theta, config.max_offset,
                                                eps) for _ in range(config.num_latent_layers))
        self.latent_norm = nn.RMSNorm(dl, eps=eps)
        self.from_latent = nn.Linear(dl, d)
        # what a byte reads before any patch is complete (bytes of the first, still open patch)
        self.no_patch = nn.Parameter(torch.zeros(dl))
        self.decoder = nn.ModuleList(IntegralLNNBlock(**lnn) for _ in range(config.num_local_layers))
        self.norm = nn.RMSNorm(d, eps=eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.register_buffer("threshold", torch.tensor(float(config.entropy_threshold)))
        self.register_buffer("calibrated", torch.tensor(False))
        self.entropy_model = (build_entropy_model(config.entropy_config, config.vocab_size)
                              if config.patching == "entropy" else None)
        # the op's handle on the entropy model's structure (its weights travel as tensors); a constant under compile
        self._entropy_structure = structure_key(config.entropy_config, config.vocab_size)
        self.post_init()
        if config.entropy_model_path:
            self._load_entropy_model(config.entropy_model_path)

    def _load_entropy_model(self, path: str) -> None:
        trained = AutoModelForCausalLM.from_pretrained(path)
        missing, unexpected = self.entropy_model.load_state_dict(trained.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(f"entropy_model_path '{path}': its weights do not fit entropy_config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        # the weights now live in this model (and its saved folder): a reload must not need the path
        self.config.entropy_model_path = None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.entropy_model is not None:
            self.entropy_model.eval()  # frozen; no dropout in the boundaries
        return self

    # ----------------------------------------------------------------------------------------- patching
    def entropies(self, ids_BT: torch.Tensor) -> torch.Tensor:
        """[B, T + 1] normalised next-byte entropies from the entropy model (see ``byte_entropies``)."""
        newline = self.config.newline_id if self.config.reset_at_newline else None
        return byte_entropies(self.entropy_model, ids_BT, self.config.bos_for_entropy, newline)

    def patch_starts(self, ids_BT: torch.Tensor) -> torch.Tensor:
        """[B, T + 1] bool: which bytes begin a patch (column T: whether the last byte closes one)."""
        return self.patches(ids_BT)[0]

    def patches(self, ids_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch starts [B, T + 1] (bool) and bytes per patch [B, max(P, 1)] (long; 0 past a row's last patch).

        Static patches: P follows from the shape. Entropy patches: one opaque op (``entropy_patches``), so a
        compiled step stays one graph, with P an unbacked size; a training call calibrates the threshold once.
        """
        B, T = ids_BT.shape
        cfg = self.config
        if cfg.patching == "static":
            starts = static_boundaries(B, T, cfg.patch_size, ids_BT.device)
            pid = patch_ids(starts)[0]
            P = -(-T // cfg.patch_size)
            return starts, pid.new_zeros(B, max(P, 1)).scatter_add_(1, pid, torch.ones_like(pid))
        weights, newline = entropy_tensors(self.entropy_model), cfg.newline_id if cfg.reset_at_newline else None
        common = (self._entropy_structure, cfg.bos_for_entropy, newline, cfg.entropy_rel_threshold, cfg.max_patch_size)
        if self.training and cfg.calibrate_threshold:  # the first training batch only (the op checks `calibrated`)
            calibrate_once(ids_BT, self.threshold, self.calibrated, weights, *common, float(cfg.target_patch_size))
        return entropy_patches(ids_BT, self.threshold, weights, *common)

    @torch.no_grad()
    def calibrate(self, H_BT1: torch.Tensor) -> float:
        """Set the global threshold so these entropies give patches of ``target_patch_size`` bytes on average."""
        cfg = self.config
        value = calibrate_threshold(H_BT1, cfg.target_patch_size, cfg.entropy_rel_threshold, cfg.max_patch_size)
        self.threshold.fill_(value)
        self.calibrated.fill_(True)
        return value

    @torch.no_grad()
    def patch_lengths(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bytes per patch over one sequence [1, T] (the ``compression`` eval's protocol)."""
        starts = self.patch_starts(input_ids)[0, : input_ids.shape[1]]
        first = torch.nonzero(starts).flatten()
        return torch.diff(first, append=first.new_tensor([input_ids.shape[1]]))

    # ------------------------------------------------------------------------------------------ forward
    def hidden_states(self, ids_BT: torch.Tensor) -> torch.Tensor:
        B, T = ids_BT.shape
        x = self.embed_bytes(ids_BT)
        if self.hash_ngrams is not None:
            x = x + self.hash_ngrams(ids_BT)
        x = self.ngram_conv(x)
        for block in self.encoder:
            x, _ = block(x)
        starts, sizes_BP = self.patches(ids_BT)
        pid, read, _ = patch_ids(starts)
        P = sizes_BP.shape[1]  # entropy patching under compile: an unbacked size (the op's), never read back
        # mean of each patch's encoder states; a patch is read only once complete (see `read`)
        pooled = x.new_zeros(B, P, x.shape[-1]).scatter_add(1, pid[..., None].expand_as(x), x)
        sizes = sizes_BP.to(x.dtype)
        z = self.to_latent(pooled / sizes.clamp(min=1)[..., None])
        # offsets below P; a compiled step's entropy-patch P is unbacked (no Python value), so it takes those below
        # its bound T: the extra ones reach before patch 0 for every query, so they are masked and weigh exactly 0
        unbacked = self.config.patching == "entropy" and torch.compiler.is_compiling()
        offsets = dilated_offsets(T if unbacked else P, self.config.max_offset)
        for block in self.latent:
            z = block(z, offsets)
        z = self.latent_norm(z)
        z = torch.cat([self.no_patch.expand(B, 1, -1), z], 1)  # index 0: no patch complete yet
        y = x + self.from_latent(torch.gather(z, 1, (read + 1)[..., None].expand(B, T, z.shape[-1])))
        for block in self.decoder:
            y, _ = block(y)
        return self.norm(y)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if input_ids is None:
            raise ValueError("ByteLatentForCausalLM reads input_ids (bytes); inputs_embeds is not supported")
        if attention_mask is not None and not torch.compiler.is_compiling():
            # right padding is harmless (every part is causal: pads only shape the patches after the real bytes);
            # left padding would put pads into the first patch. Eager only: a compiled step never reads the mask.
            if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
                raise ValueError("ByteLatentForCausalLM takes right-padded batches only (attention_mask has a 0 "
                                 "before a 1): pad on the right, pack the data (data.packing: group) or use batch "
                                 "size 1")
        if use_cache is None:
            use_cache = cache is not None
        if use_cache:
            cache = cache if cache is not None else DynamicCache(config=self.config)
            state = states_of(cache, 0)
            hidden = decode_hidden_states(self, input_ids, state, state.seen_tokens)
            state.seen_tokens += input_ids.shape[1]
        else:
            hidden = self.hidden_states(input_ids)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


def _stand_in_entropy_config(vocab_size: int) -> dict[str, Any]:
    return dict(model_type="archlab_transformer", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                position_embedding="rope", vocab_size=vocab_size)


def parameter_count(config: ByteLatentConfig, include_entropy_model: bool = False) -> int:
    """Parameters of a model of this config (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = ByteLatentForCausalLM(config)
    return sum(p.numel() for n, p in model.named_parameters()
               if include_entropy_model or not n.startswith("entropy_model."))
