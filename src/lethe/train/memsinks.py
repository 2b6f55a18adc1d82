r"""MemSinks: route memorization into ID-keyed "sink" neurons that are switched off after training.

Ghosal, Maini, Raghunathan, "Memorization Sinks: Isolating Memorization during LLM Training", ICML 2025,
arXiv:2507.09937 (authors' code: github.com/AR-FORUM/MemSinks; re-implemented here from DESIGN §3.2).

In every transformer block the MLP's hidden units h ∈ R^I (the input of the down projection: the SwiGLU
product silu(W_gate x) ⊙ W_up x in LLaMA/Qwen/Mistral, the activation before ``c_proj`` in GPT-2) split into

    shared units   0 … n_shared−1,           n_shared = ⌊I · p_gen⌋        (always on)
    sink pool      n_shared … I−1,           n_sink   = I − n_shared        (sink j = unit n_shared + j)

Every token t of document s (its ID, ≥ 1; repetitions of a document share it) switches on the sink subset
S(s) ⊂ {0 … n_sink−1} during training, with **no 1/p rescaling**:

    h_t ← h_t ⊙ m_t,      m_t = [1, …, 1 ‖ 1{j ∈ S(s_t)}]_{j < n_sink}

so a masked sink gets exactly zero gradient from that token. Knowledge shared across documents collects in
the shared units; what only a repeated document's tokens reinforce collects in its sinks, which
evaluation then removes. Evaluation modes (a fixed per-unit scale, except ``train``):

    all       shared × 1,  sinks × p_mem                        (the expected training mask)
    dropout   shared × c,  sinks × 0        c = (p_gen + p_mem) / p_gen  (the reference's factor, 1.429 at
              0.7/0.3; ``dropout_scale`` overrides it, e.g. the mass-matching (p_gen + (1−p_gen)·p_mem)/p_gen)
    exclude   ``all`` with the sinks of the given IDs × 0       (per-document deletion)
    activate  shared + exactly S(s), no scaling
    train     the training mask m_t of every token's own ID

Sink subsets, two strategies:

* ``reference`` — bit-compatible with the authors' ``batch_seqtied_mask_mult`` (a = 1588635695,
  M = 4294967291, int64 with wrap-around as these very torch ops)::

      P = remainder(pow(a, arange(n_sink)), M)          # pow wraps for j ≥ 3: P_j is not a^j mod M
      r = remainder(remainder((s · 2^16)[…, None] · P, M), M)
      j ∈ S(s)  ⇔  r_j / M < p_mem                      # float32 true division

  Flaws (documented, kept for compatibility): sink 0 is on for every s < ~19 661, some sinks are never on
  for small sequential IDs, the cardinality of S(s) varies, and nearby IDs overlap.
* ``hash`` (default) — u_{s,j} = mix(mix(mix(seed + γ) + s·P') + (j + 1)·γ [+ layer]) with ``mix`` the
  splitmix64 finalizer (as goldfish's ``hash``); S(s) = the round(p_mem · n_sink) sinks with the smallest
  u_{s,j}: a fixed cardinality, no sink always or never on, and optionally a different subset per layer.

IDs: ``-1`` marks padding (the collator's value; pad tokens get no sinks); ID 0 and other negative IDs
are an error (in the reference, ID 0 switches on every sink).

Implementation: forward pre-hooks on each block's down projection (``mlp.down_proj`` or GPT-2's
``mlp.c_proj``), no model fork. :class:`MemSinks` holds the current batch's per-token IDs ([B, T], so packed
rows work) and reads them inside the hooks, so the model's forward signature is unchanged; they stay set
until the next batch, so gradient checkpointing's recomputation sees the same masks. The fixed-scale
modes are *baked* by scaling the down projections' input columns (:func:`bake`): a plain HF model with the
same logits and no hooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lethe.errors import LetheError
from lethe.runs import atomic_write_json
from lethe.train.goldfish import _GAMMA, _POLY, _mix64

SINK_STRATEGIES = ("hash", "reference")
MODES = ("train", "all", "dropout", "exclude", "activate")
FIXED_MODES = ("all", "dropout", "exclude", "activate")  # a per-unit scale: bakeable, no IDs at run time
PAD_DOC_ID = -1
REFERENCE_A = 1588635695
REFERENCE_M = 4294967291
REFERENCE_BASE = 2**16
SETTINGS_FILE = "memsinks.json"
BAKED_FILE = "memsinks_baked.json"
# module-name suffixes of the MLP down projection, per architecture family
DOWN_PROJECTIONS = ("mlp.down_proj", "mlp.c_proj")


# ----------------------------------------------------------------------------------------- sink subsets
def split_sizes(intermediate_size: int, p_gen: float) -> tuple[int, int]:
    """(n_shared, n_sink) = (⌊I·p_gen⌋, I − ⌊I·p_gen⌋)."""
    n_shared = math.floor(intermediate_size * p_gen)
    return n_shared, intermediate_size - n_shared


def check_probabilities(p_gen: Any, p_mem: Any, key: str = "memsinks") -> None:
    if isinstance(p_gen, bool) or not isinstance(p_gen, int | float) or not 0 < p_gen < 1:
        raise LetheError(f"config: {key}.p_gen must be in (0, 1), got {p_gen!r}")
    if isinstance(p_mem, bool) or not isinstance(p_mem, int | float) or not 0 < p_mem <= 1:
        raise LetheError(f"config: {key}.p_mem must be in (0, 1], got {p_mem!r}")


def check_ids(ids: torch.Tensor) -> torch.Tensor:
    """``ids`` as int64; ID 0 and negative IDs other than the padding marker −1 are an error."""
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise LetheError(f"memsinks: document IDs must be integers, got dtype {ids.dtype}")
    ids = ids.long()
    bad = (ids == 0) | (ids < PAD_DOC_ID)
    if bool(bad.any()):
        raise LetheError(f"memsinks: document IDs must be >= 1 (-1 marks padding), got {int(ids[bad][0])} "
                         "(ID 0 would switch on every sink in the reference scheme)")
    return ids


def reference_powers(n_sink: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """P = remainder(pow(a, arange(n_sink)), M) in int64, wrapping exactly as the reference's torch ops."""
    return torch.remainder(torch.pow(REFERENCE_A, torch.arange(n_sink, device=device)), REFERENCE_M)


def _reference_mask(ids: torch.Tensor, n_sink: int, p_mem: float) -> torch.Tensor:
    powers = reference_powers(n_sink, ids.device)
    r = torch.remainder(torch.remainder((ids * REFERENCE_BASE)[..., None] * powers, REFERENCE_M), REFERENCE_M)
    return (r / REFERENCE_M) < p_mem


def n_active_sinks(n_sink: int, p_mem: float) -> int:
    """|S(s)| under ``hash``: round(p_mem · n_sink), at least 1."""
    return max(1, min(n_sink, round(p_mem * n_sink)))


def _hash_mask(ids: torch.Tensor, n_sink: int, p_mem: float, seed: int, layer: int) -> torch.Tensor:
    key = _mix64(torch.tensor(seed, dtype=torch.int64, device=ids.device) + _GAMMA)
    if layer:
        key = _mix64(key + torch.tensor(layer, dtype=torch.int64, device=ids.device) * _POLY)
    base = _mix64(key + ids * _POLY)  # [...]
    j = torch.arange(1, n_sink + 1, dtype=torch.int64, device=ids.device)
    u = _mix64(base[..., None] + j * _GAMMA)  # [..., n_sink]: any fixed order of the 64-bit values is uniform
    chosen = u.topk(n_active_sinks(n_sink, p_mem), dim=-1, largest=False).indices
    return torch.zeros(u.shape, dtype=torch.bool, device=ids.device).scatter_(-1, chosen, True)


def sink_mask(ids: Any, n_sink: int, p_mem: float, strategy: str = "hash", seed: int = 0,
              layer: int = 0) -> torch.Tensor:
    """Bool [..., n_sink]: sink j is on for the token (or document) whose ID is ``ids[...]``.

    ``ids`` is any integer tensor ([B, T] per token, or [N] per document); −1 (padding) gets no sinks. The
    masks are computed once per distinct ID and gathered back, so the cost is O(#IDs · n_sink), not a
    loop over tokens. ``layer`` selects the per-layer subset of ``hash`` (0 = the shared one).
    """
    if strategy not in SINK_STRATEGIES:
        raise LetheError(f"memsinks: strategy must be one of {', '.join(SINK_STRATEGIES)}, got {strategy!r}")
    if n_sink < 1:
        raise LetheError(f"memsinks: the sink pool is empty (n_sink = {n_sink})")
    ids = check_ids(ids)
    unique, inverse = torch.unique(ids, return_inverse=True)
    valid = unique != PAD_DOC_ID
    per_id = torch.zeros((unique.numel(), n_sink), dtype=torch.bool, device=ids.device)
    if bool(valid.any()):
        real = unique[valid]
        per_id[valid] = (_reference_mask(real, n_sink, p_mem) if strategy == "reference"
                         else _hash_mask(real, n_sink, p_mem, seed, layer))
    return per_id[inverse]


# ----------------------------------------------------------------------------------------- the spec saved
@dataclass
class MemSinksSpec:
    """Everything that defines a MemSinks model's masks; saved as ``memsinks.json`` beside the weights."""

    p_gen: float = 0.7
    p_mem: float = 0.3
    strategy: str = "hash"
    seed: int = 0
    per_layer: bool = False
    dropout_scale: float = 0.0  # 0 = the reference's (p_gen + p_mem) / p_gen
    intermediate_size: int = 0
    num_layers: int = 0
    projection: str = ""
    n_shared: int = 0
    n_sink: int = 0
    method: str = field(default="memsinks (Ghosal et al. 2025, arXiv 2507.09937)")

    @property
    def shared_scale(self) -> float:
        """The ``dropout`` mode's factor on the shared units."""
        return self.dropout_scale or (self.p_gen + self.p_mem) / self.p_gen

    def validate(self) -> None:
        check_probabilities(self.p_gen, self.p_mem)
        if self.strategy not in SINK_STRATEGIES:
            raise LetheError(f"memsinks: strategy must be one of {', '.join(SINK_STRATEGIES)}, "
                             f"got {self.strategy!r}")
        if self.dropout_scale < 0 or not math.isfinite(self.dropout_scale):
            raise LetheError(f"memsinks: dropout_scale must be >= 0 (0 = the reference's factor), "
                             f"got {self.dropout_scale}")

    def save(self, folder: str | Path) -> Path:
        return atomic_write_json(Path(folder) / SETTINGS_FILE, asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> MemSinksSpec | None:
        """The spec saved in a model folder, or None when the model was trained without MemSinks."""
        path = Path(folder) / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
            spec = cls(**known)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
            raise LetheError(f"{path} is not a valid MemSinks settings file ({err})") from None
        spec.validate()
        return spec


def down_projections(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The MLP down projection of every block, in layer order; a one-line error if there is none."""
    found = [(name, module) for name, module in model.named_modules()
             if any(name == suffix or name.endswith("." + suffix) for suffix in DOWN_PROJECTIONS)]
    if not found:
        raise LetheError(f"memsinks: {type(model).__name__} has no recognizable MLP down projection "
                         f"(looked for modules named *.{' or *.'.join(DOWN_PROJECTIONS)})")
    return found


def _in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None:  # GPT-2: weight [in, out]
        return int(weight.shape[0])
    raise LetheError(f"memsinks: unsupported down projection {type(module).__name__} (need nn.Linear or Conv1D)")


def spec_for(model: nn.Module, p_gen: float = 0.7, p_mem: float = 0.3, strategy: str = "hash", seed: int = 0,
             per_layer: bool = False, dropout_scale: float = 0.0) -> MemSinksSpec:
    """The spec of ``model`` under these settings (its width and down projections read from the model)."""
    check_probabilities(p_gen, p_mem)
    projections = down_projections(model)
    widths = {_in_features(module) for _, module in projections}
    if len(widths) != 1:
        raise LetheError(f"memsinks: the down projections have different widths {sorted(widths)}")
    width = widths.pop()
    n_shared, n_sink = split_sizes(width, p_gen)
    if n_shared < 1 or n_sink < 1:
        raise LetheError(f"memsinks: p_gen={p_gen} leaves {n_shared} shared and {n_sink} sink units of {width}")
    suffix = next(s for s in DOWN_PROJECTIONS if projections[0][0].endswith(s))
    spec = MemSinksSpec(p_gen=float(p_gen), p_mem=float(p_mem), strategy=strategy, seed=int(seed),
                        per_layer=per_layer, dropout_scale=float(dropout_scale), intermediate_size=width,
                        num_layers=len(projections), projection=suffix, n_shared=n_shared, n_sink=n_sink)
    spec.validate()
    return spec


def check_spec_matches(spec: MemSinksSpec, model: nn.Module, where: str = "model") -> None:
    """A ``memsinks.json`` must describe this model's width and depth."""
    projections = down_projections(model)
    width = _in_features(projections[0][1])
    if (width, len(projections)) != (spec.intermediate_size, spec.num_layers):
        raise LetheError(f"{where}: {SETTINGS_FILE} describes {spec.num_layers} layers of width "
                         f"{spec.intermediate_size} but the model has {len(projections)} of width {width}")
    if split_sizes(width, spec.p_gen) != (spec.n_shared, spec.n_sink):
        raise LetheError(f"{where}: {SETTINGS_FILE} is inconsistent (n_shared/n_sink do not follow from p_gen)")


# ----------------------------------------------------------------------------------------- per-unit scales
def _layer_key(spec: MemSinksSpec, layer: int) -> int:
    return layer + 1 if spec.per_layer else 0


def mode_scale(spec: MemSinksSpec, mode: str, layer: int = 0, exclude_ids: Iterable[int] = (),
               activate_id: int | None = None) -> torch.Tensor:
    """The fixed per-unit scale [I] (float32) of a bakeable mode at ``layer``."""
    if mode not in FIXED_MODES:
        raise LetheError(f"memsinks: mode {mode!r} is not a fixed scale (one of {', '.join(FIXED_MODES)})")
    scale = torch.ones(spec.intermediate_size)
    sinks = scale[spec.n_shared:]
    if mode == "dropout":
        scale[: spec.n_shared] = spec.shared_scale
        sinks.zero_()
        return scale
    if mode == "activate":
        if activate_id is None:
            raise LetheError("memsinks: mode 'activate' needs the ID whose sinks to switch on")
        sinks.copy_(sink_mask(torch.tensor([activate_id]), spec.n_sink, spec.p_mem, spec.strategy, spec.seed,
                              _layer_key(spec, layer))[0].float())
        return scale
    sinks.fill_(spec.p_mem)
    ids = torch.tensor(list(exclude_ids), dtype=torch.long)
    if mode == "exclude":
        if ids.numel() == 0:
            raise LetheError("memsinks: mode 'exclude' needs at least one ID")
        hit = sink_mask(ids, spec.n_sink, spec.p_mem, spec.strategy, spec.seed, _layer_key(spec, layer)).any(0)
        sinks[hit] = 0.0
    return scale


# ----------------------------------------------------------------------------------------- hooks
class MemSinks:
    """Forward pre-hooks on every down projection of ``model`` that apply a MemSinks mode.

    ``with MemSinks(model, spec) as sinks: sinks.set_ids(doc_ids); model(...)`` — in ``train`` mode each
    token's hidden units are multiplied by its document's mask; the fixed modes multiply by
    :func:`mode_scale`. :meth:`remove` (or leaving the ``with`` block) takes the hooks off again.
    """

    def __init__(self, model: nn.Module, spec: MemSinksSpec, mode: str = "train", *,
                 exclude_ids: Iterable[int] = (), activate_id: int | None = None) -> None:
        check_spec_matches(spec, model)
        self.spec = spec
        self.doc_ids: torch.Tensor | None = None
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._handles = [module.register_forward_pre_hook(self._hook(layer))
                         for layer, (_, module) in enumerate(down_projections(model))]
        self.set_mode(mode, exclude_ids=exclude_ids, activate_id=activate_id)

    def set_mode(self, mode: str, *, exclude_ids: Iterable[int] = (), activate_id: int | None = None) -> None:
        if mode not in MODES:
            raise LetheError(f"memsinks: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self._scales = None if mode == "train" else [
            mode_scale(self.spec, mode, layer, exclude_ids, activate_id) for layer in range(self.spec.num_layers)]
        self._cache.clear()

    def set_ids(self, doc_ids: torch.Tensor | None) -> None:
        """The per-token document IDs [B, T] of the next forward pass (kept until replaced)."""
        self.doc_ids = None if doc_ids is None else check_ids(doc_ids)
        self._cache.clear()

    def _train_multiplier(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """The sink part [B, T, n_sink] of each token's mask (cached per batch; the shared part is all ones)."""
        key = (_layer_key(self.spec, layer), like.device, like.dtype)
        if key not in self._cache:
            if self.doc_ids is None:
                raise LetheError("memsinks: mode 'train' needs the batch's document IDs (set_ids) before forward")
            ids = self.doc_ids.to(like.device)
            if ids.shape != like.shape[:-1]:
                raise LetheError(f"memsinks: document IDs of shape {tuple(ids.shape)} do not match the batch "
                                 f"{tuple(like.shape[:-1])}")
            sinks = sink_mask(ids, self.spec.n_sink, self.spec.p_mem, self.spec.strategy, self.spec.seed, key[0])
            self._cache[key] = sinks.to(like.dtype)
        return self._cache[key]

    def _hook(self, layer: int):
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            hidden = args[0]
            if self._scales is None:
                sinks = self._train_multiplier(layer, hidden)
                if _may_scale_in_place(hidden):  # only the sink slice: 1 − p_gen of the memory traffic
                    hidden[..., self.spec.n_shared:].mul_(sinks)
                    return args
                shared = hidden.new_ones((*sinks.shape[:-1], self.spec.n_shared))
                return (hidden * torch.cat([shared, sinks], dim=-1), *args[1:])
            return (hidden * self._scales[layer].to(device=hidden.device, dtype=hidden.dtype), *args[1:])

        return pre_hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.doc_ids = None
        self._cache.clear()

    def __enter__(self) -> MemSinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _may_scale_in_place(hidden: torch.Tensor) -> bool:
    """True when multiplying the down projection's input in place is safe for autograd: no graph (inference),
    or the tensor is the output of an element-wise product (SwiGLU's silu(g) ⊙ u, GPT-2's tanh-GELU), whose
    backward never reads its own output. Other producers (e.g. ReLU, which saves its output) get a copy."""
    if not hidden.requires_grad:
        return not torch.is_inference_mode_enabled() or hidden.is_inference()
    return type(hidden.grad_fn).__name__ == "MulBackward0"


def attach(model: nn.Module, spec: MemSinksSpec, mode: str = "train", **kwargs: Any) -> MemSinks:
    """Install the hooks (remove them with ``.remove()`` or use the result as a context manager)."""
    return MemSinks(model, spec, mode, **kwargs)


# ----------------------------------------------------------------------------------------- baking
@torch.no_grad()
def bake(model: nn.Module, spec: MemSinksSpec, mode: str, *, exclude_ids: Iterable[int] = (),
         activate_id: int | None = None) -> nn.Module:
    """Fold a fixed-scale mode into the down projections' input columns, in place; returns ``model``.

    down(h ⊙ c) = W (h ⊙ c) + b = (W · diag(c)) h + b, so scaling column j of W (row j of GPT-2's Conv1D
    weight) by c_j gives the hooked model's logits with a plain HF model.
    """
    check_spec_matches(spec, model)
    exclude_ids = list(exclude_ids)
    for layer, (_, module) in enumerate(down_projections(model)):
        scale = mode_scale(spec, mode, layer, exclude_ids, activate_id).to(module.weight)
        if isinstance(module, nn.Linear):
            module.weight.mul_(scale[None, :])
        else:
            module.weight.mul_(scale[:, None])
    return model


def apply_saved_mode(model: nn.Module, model_dir: str | Path, mode: str, *, exclude_ids: Iterable[int] = (),
                     activate_id: int | None = None) -> MemSinksSpec:
    """Bake ``mode`` into a model loaded from ``model_dir`` (in memory), checking its ``memsinks.json``."""
    folder = Path(model_dir)
    if (folder / BAKED_FILE).is_file():
        raise LetheError(f"{folder} is already a baked MemSinks model ({BAKED_FILE}); audit it without "
                         "--memsinks-mode")
    spec = MemSinksSpec.load(folder)
    if spec is None:
        raise LetheError(f"--memsinks-mode {mode}: {folder} was trained without MemSinks (no {SETTINGS_FILE})")
    if mode not in FIXED_MODES:
        raise LetheError(f"--memsinks-mode must be one of {', '.join(FIXED_MODES)}, got {mode!r}")
    check_spec_matches(spec, model, where=str(folder))
    bake(model, spec, mode, exclude_ids=exclude_ids, activate_id=activate_id)
    return spec


def load_model_in_mode(name: str | Path, mode: str = "", *, ids: Iterable[int] = ()):
    """``lethe.models.load_model`` with MemSinks ``mode`` baked in memory ("" = the model as saved).
    ``ids``: the IDs of ``exclude`` (several) or ``activate`` (one)."""
    from lethe.models import load_model, resolve_model_path

    model, tokenizer = load_model(name)
    if mode:
        ids = list(ids)
        if mode == "activate" and len(ids) != 1:
            raise LetheError(f"--memsinks-mode activate needs exactly one ID, got {len(ids)}")
        apply_saved_mode(model, resolve_model_path(str(name)), mode, exclude_ids=ids,
                         activate_id=ids[0] if mode == "activate" else None)
    elif ids:
        raise LetheError("MemSinks IDs were given without --memsinks-mode")
    return model, tokenizer


def bake_model_folder(name: str | Path, out: str | Path, mode: str, *, ids: Iterable[int] = ()) -> Path:
    """``lethe memsinks bake``: save ``mode`` folded into a plain HF model at ``out`` (never over a folder)."""
    from lethe.models import resolve_model_path, save_model
    from lethe.runs import publish_dir

    out = Path(out)
    if out.exists():
        raise LetheError(f"--out {out} already exists (baked models are never written over a folder)")
    ids = list(ids)
    model, tokenizer = load_model_in_mode(name, mode, ids=ids)
    source = resolve_model_path(str(name))
    spec = MemSinksSpec.load(source)

    def write(staging: Path) -> None:
        save_model(model, tokenizer, staging)
        atomic_write_json(staging / BAKED_FILE, {"mode": mode, "ids": ids, "source": str(source),
                                                  "memsinks": asdict(spec) if spec else None})

    return publish_dir(out, write)
