"""The tiny pretrained LLaVA-style base model of ``cvit-mini``, built from config and cached.

A random model cannot learn the cvit-mini tasks through LoRA within a demo's budget: it must already look
at the image, condition on the question, and be able to emit every answer word. So the base is pretrained
(full model) on an **auxiliary** mix over the same kind of pictures, never on the benchmark tasks
themselves (docs/benchmarks/mini.md):

==============  ==================================================================  ===================
prompt          text                                                                answer
==============  ==================================================================  ===================
attributes      ``List the attributes.``                                            ``red circle left``
reverse         ``List the attributes in reverse order.``                           ``left circle red``
yes/no          ``Is the shape red?`` / ``Is it a circle?`` / ``Is the shape on the left?``  ``yes`` / ``no``
colour MC       ``Which color is the shape?\\nA. red\\nB. green\\nC. blue\\nD. yellow\\nAnswer with the letter.``  ``A``
==============  ==================================================================  ===================

Several prompts teach it to read the question; the letter MC makes A–D producible outputs (LLM LoRA cannot
learn output tokens the base never produced). After training, greedy exact-match accuracy on a held-out
set of the same mix must reach ``min_accuracy`` (80 %), else :class:`MiniBaseError` is raised: a weak base
gives weak diagonals and meaningless forgetting numbers.

Tokenizer: word level (``tokenizers`` ``WordLevel`` + ``WhitespaceSplit``), one token per whitespace-separated
word, so exact match on decoded text is exact match on tokens. The vocabulary is every word the benchmark can
show or ask for: the synthetic tasks' texts, every instruction template of the benchmark's template sets, the
words of its prompt format, the auxiliary mix, plus the specials ``<unk> <s> </s> <pad> <image>`` (ids 0–4).
BOS is added by a post-processor. Decoding joins tokens with single spaces.

Model (LLaVA-1.5 layout): CLIP vision tower 32 px, patch 8 (16 image tokens), hidden 64, 2 layers,
**``vision_feature_layer=-1``** (with 2 layers, -2 would use only the first); MLP projector; LLaMA 64 wide,
2 layers, 4 heads / 2 KV heads. 186 k parameters with the 181-word vocabulary.

Pretraining: AdamW (fused, lr 1e-3, no weight decay), batch 32, 2000 items, ``steps`` steps, linear warm-up over ``warmup`` steps then cosine decay
to 0; loss on the answer words and ``</s>`` only; sequences right-padded (positions 0..n-1, as in left-padded
generation, which derives positions from the attention mask). Inputs are encoded once with the processor.

Determinism: weights and data come from ``seed`` (``torch.manual_seed``, NumPy streams); training runs with
a fixed thread count (``threads``), so the same seed on the same machine gives byte-identical weights. On
another CPU (other floating-point kernels: AVX2 vs AVX-512, ``ATEN_CPU_CAPABILITY``) the trajectory differs and
so does the built model. That is why the base is **shipped, not rebuilt**: :func:`shipped_mini_base` is the
folder ``cvit_bench/mini/mini_base/`` in the package (built once with this recipe, seed 0, by
``cvit-bench mini-base build``), whose ``mini_base.json`` records the recipe, the seed, the held-out accuracy per
prompt, the parameter count, the build environment and the sha256 of every file; loading verifies the hashes
(:func:`verify_mini_base`) and names a damaged file. :func:`cached_mini_base` returns the shipped base for the
default recipe and seed; for any other recipe or seed it builds under ``$CVIT_BENCH_CACHE`` (default
``$XDG_CACHE_HOME/cvit-bench`` or ``~/.cache/cvit-bench``) as ``mini-base-<hash>``, the hash covering the recipe,
the seed, the vocabulary and the torch/transformers versions, built in a temporary folder and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import CvitError
from ..progress import Progress, as_progress

__all__ = ["MiniRecipe", "MiniBaseError", "build_mini_base", "cached_mini_base", "shipped_mini_base", "verify_mini_base",
           "mini_vocabulary", "build_word_tokenizer", "aux_examples", "AUX_PROMPTS", "RECIPE_VERSION", "SPECIAL_TOKENS",
           "SHIPPED_DIR", "SHIPPED_SEED"]

RECIPE_VERSION = "mini-base-1"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
REPORT_FILE = "mini_base.json"
#: The prebuilt base inside the package (package data) and the seed it was built with.
SHIPPED_DIR = Path(__file__).resolve().parent / "mini_base"
SHIPPED_SEED = 0


class MiniBaseError(CvitError):
    """The pretrained base did not reach the required held-out accuracy."""


@dataclass(frozen=True)
class MiniRecipe:
    """Everything that determines the built base (hashed into the cache folder name)."""

    benchmark: str = "cvit-mini"
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_intermediate: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    vision_feature_layer: int = -1
    text_hidden: int = 64
    text_intermediate: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    steps: int = 6000   # 4000 reached 78 % with seed 0 on one thread (below min_accuracy); 6000 reached 95 %
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 20
    n_train: int = 2000
    n_heldout: int = 400
    min_accuracy: float = 0.8
    threads: int = 1   # one thread: no OpenMP barrier spinning on a busy 2-core machine, and the same reduction order everywhere

    def key(self, seed: int, vocab: Sequence[str]) -> str:
        import torch
        import transformers

        blob = json.dumps({"version": RECIPE_VERSION, "recipe": asdict(self), "seed": seed, "vocab": list(vocab),
                           "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ auxiliary pretraining mix

def _attributes(scene, rng) -> tuple[str, str]:
    return "List the attributes.", f"{scene.color} {scene.shape} {scene.position}"


def _reverse(scene, rng) -> tuple[str, str]:
    return "List the attributes in reverse order.", f"{scene.position} {scene.shape} {scene.color}"


def _yes_no(scene, rng) -> tuple[str, str]:
    from .scenes import COLORS, POSITIONS, SHAPES

    kind = int(rng.integers(3))
    truth, values, text = [
        (scene.color, list(COLORS), "Is the shape {}?"),
        (scene.shape, list(SHAPES), "Is it a {}?"),
        (scene.position, list(POSITIONS), "Is the shape on the {}?"),
    ][kind]
    if rng.random() < 0.5:
        return text.format(truth), "yes"
    others = [v for v in values if v != truth]
    return text.format(others[int(rng.integers(len(others)))]), "no"


def _color_mc(scene, rng) -> tuple[str, str]:
    from .scenes import COLORS, LETTERS

    names = list(COLORS)
    options = "\n".join(f"{letter}. {name}" for letter, name in zip(LETTERS, names))
    return f"Which color is the shape?\n{options}\nAnswer with the letter.", LETTERS[names.index(scene.color)]


#: name -> fn(scene, rng) -> (prompt text, answer); items cycle through them in this order.
AUX_PROMPTS: dict[str, Callable] = {"attributes": _attributes, "reverse": _reverse, "yes_no": _yes_no,
                                    "color_mc": _color_mc}


@dataclass
class AuxExample:
    kind: str
    image: np.ndarray
    prompt: str
    answer: str


def aux_examples(n: int, seed: int, stream: str) -> list[AuxExample]:
    """``n`` auxiliary examples (prompts cycle over :data:`AUX_PROMPTS`), drawn from the NumPy stream
    ``mini-base:<seed>:<stream>`` so that train and held-out sets are independent."""
    from .scenes import draw_scene, random_scene, stream_rng

    rng = stream_rng("mini-base", seed, stream)
    kinds = list(AUX_PROMPTS)
    out = []
    for i in range(n):
        scene = random_scene(rng)
        image = draw_scene(scene, rng)
        prompt, answer = AUX_PROMPTS[kinds[i % len(kinds)]](scene, rng)
        out.append(AuxExample(kinds[i % len(kinds)], image, prompt, answer))
    return out


def _aux_texts() -> list[str]:
    from .scenes import COLORS, LETTERS, POSITIONS, SHAPES, Scene

    texts = []
    for c in COLORS:
        for s in SHAPES:
            for p in POSITIONS:
                scene = Scene(s, c, p, POSITIONS[p], 5)
                for fn in (_attributes, _reverse, _color_mc):
                    texts.extend(fn(scene, None))
    texts += ["yes", "no", *LETTERS]
    texts += [t.format(v) for t, vs in (("Is the shape {}?", COLORS), ("Is it a {}?", SHAPES),
                                        ("Is the shape on the {}?", POSITIONS)) for v in vs]
    return texts


# ------------------------------------------------------------------------------------------------ tokenizer

def mini_vocabulary(benchmark: str = "cvit-mini") -> list[str]:
    """Specials (ids 0–4) then every whitespace-separated word the benchmark and the mix can use, sorted."""
    from ..benchmark import load_benchmark
    from ..data.conversation import get_prompt_format
    from .scenes import benchmark_texts
    from ..data.templates import load_template_set

    spec = load_benchmark(benchmark)
    texts = list(benchmark_texts(spec.tasks.values()))
    for set_id in spec.template_sets:
        for templates in load_template_set(set_id).families.values():
            texts.extend(templates)
    fmt = get_prompt_format(spec.prompt_format)
    prefix, answer = fmt.render_train("", "", True)
    texts += [prefix, answer]
    texts += _aux_texts()
    words = {w for t in texts for w in t.split()}
    for special in SPECIAL_TOKENS:   # "</s>" may be glued to an answer; specials get their fixed ids
        words = {w.replace(special, "") for w in words}
    words.discard("")
    return [*SPECIAL_TOKENS, *sorted(words)]


def build_word_tokenizer(vocab: Sequence[str]):
    """A ``PreTrainedTokenizerFast`` over a word-level vocabulary (left padding, BOS added, ``<image>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise CvitError(f"vocabulary must start with {SPECIAL_TOKENS}")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        padding_side="left", extra_special_tokens={"image_token": "<image>"},
    )


# -------------------------------------------------------------------------------------------- model + data

def _build_processor(recipe: MiniRecipe, tokenizer):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    ip = CLIPImageProcessorPil(size={"shortest_edge": recipe.image_size},
                               crop_size={"height": recipe.image_size, "width": recipe.image_size})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=recipe.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _build_model(recipe: MiniRecipe, tokenizer, seed: int):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=recipe.vision_hidden, intermediate_size=recipe.vision_intermediate,
                              num_hidden_layers=recipe.vision_layers, num_attention_heads=recipe.vision_heads,
                              image_size=recipe.image_size, patch_size=recipe.patch_size,
                              projection_dim=recipe.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.text_hidden,
                       intermediate_size=recipe.text_intermediate, num_hidden_layers=recipe.text_layers,
                       num_attention_heads=recipe.text_heads, num_key_value_heads=recipe.text_kv_heads,
                       max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
                      image_seq_length=(recipe.image_size // recipe.patch_size) ** 2,
                      vision_feature_select_strategy="default", vision_feature_layer=recipe.vision_feature_layer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = (tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                         tokenizer.bos_token_id)
    return model


@dataclass
class Encoded:
    """Right-padded training tensors: ids, mask, labels (-100 outside answer + EOS), pixel values."""

    input_ids: "object"
    attention_mask: "object"
    labels: "object"
    pixel_values: "object"


def encode_for_training(examples: Sequence[AuxExample], processor, fmt) -> Encoded:
    """Encode once with the processor; labels keep only the answer part's tokens (answer words + ``</s>``)."""
    import torch
    from PIL import Image

    parts = [fmt.render_train(e.prompt, e.answer, True) for e in examples]
    batch = processor(images=[Image.fromarray(e.image) for e in examples], text=[p + a for p, a in parts],
                      return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n_answer = torch.tensor([len(processor.tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a in parts])
    # Left padding puts every answer at the row's end; move rows to right padding (stable sort on "is pad").
    order = torch.argsort(1 - mask, dim=1, stable=True)
    ids, mask = ids.gather(1, order), mask.gather(1, order)
    lengths = mask.sum(1)
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    is_answer = (pos >= (lengths - n_answer).unsqueeze(1)) & (pos < lengths.unsqueeze(1))
    labels = torch.where(is_answer, ids, torch.full_like(ids, -100))
    return Encoded(ids, mask, labels, batch["pixel_values"])


def pretrain(model, data: Encoded, recipe: MiniRecipe, seed: int, progress: Progress | None = None) -> list[float]:
    """Full-model AdamW on the encoded mix (linear warm-up, then cosine decay to 0); returns every step's loss."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    progress = as_progress(progress)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    sched = get_cosine_schedule_with_warmup(opt, recipe.warmup, recipe.steps)
    n = data.input_ids.shape[0]
    perm, cursor, losses = torch.randperm(n, generator=gen), 0, []
    model.train()
    with progress.steps("mini base: pretraining", recipe.steps) as bar:
        for step in range(recipe.steps):
            if cursor + recipe.batch_size > n:
                perm, cursor = torch.randperm(n, generator=gen), 0
            idx = perm[cursor: cursor + recipe.batch_size]
            cursor += recipe.batch_size
            width = int(data.attention_mask[idx].sum(1).max())
            out = model(input_ids=data.input_ids[idx, :width], attention_mask=data.attention_mask[idx, :width],
                        pixel_values=data.pixel_values[idx], labels=data.labels[idx, :width])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
            losses.append(out.loss.item())
            if (step + 1) % 50 == 0:
                bar.advance(50, loss=f"{sum(losses[-50:]) / 50:.3f}")
    model.eval()
    return losses


def greedy_accuracy(model, processor, fmt, examples: Sequence[AuxExample], batch_size: int = 100,
                    max_new_tokens: int = 6) -> dict[str, float]:
    """Exact-match accuracy (stripped decoded text == answer) of greedy generation, overall and per prompt."""
    import torch
    from PIL import Image

    correct: dict[str, list[int]] = {}
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start: start + batch_size]
            batch = processor(images=[Image.fromarray(e.image) for e in chunk],
                              text=[fmt.render_eval(e.prompt, True) for e in chunk], return_tensors="pt",
                              padding=True)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
            texts = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for e, text in zip(chunk, texts):
                correct.setdefault(e.kind, []).append(int(text.strip() == e.answer))
    result = {k: sum(v) / len(v) for k, v in correct.items()}
    result["overall"] = sum(sum(v) for v in correct.values()) / sum(len(v) for v in correct.values())
    return result


# ------------------------------------------------------------------------------------------------- builders

@dataclass
class BuildReport:
    """``mini_base.json``: how the folder was built and what it holds (written last: no report = incomplete)."""

    recipe: dict
    seed: int
    key: str
    vocab_size: int
    parameters: int
    heldout_accuracy: dict[str, float]
    final_loss: float
    pretrain_seconds: float
    threads: int
    environment: dict = field(default_factory=dict)   # torch/transformers versions and CPU kernel set of the build
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of every other file in the folder
    extra: dict = field(default_factory=dict)


def _build_environment() -> dict[str, str]:
    import platform

    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
            "python": platform.python_version()}


def _file_hashes(folder: Path) -> dict[str, str]:
    from ..files import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != REPORT_FILE}


def build_mini_base(out_dir: str | os.PathLike, *, seed: int = 0, steps: int | None = None,
                    recipe: MiniRecipe | None = None, progress: Progress | None = None) -> Path:
    """Build, pretrain, check and save the cvit-mini base model + processor into ``out_dir``.

    ``steps`` overrides ``recipe.steps``. Raises :class:`MiniBaseError` when the held-out accuracy on the
    auxiliary mix is below ``recipe.min_accuracy`` (pass a recipe with ``min_accuracy=0`` to skip the check,
    e.g. for a quick smoke build). Writes ``mini_base.json`` (recipe, accuracy, timing, file hashes) last.
    """
    import torch

    from ..benchmark import load_benchmark
    from ..data.conversation import get_prompt_format

    progress = as_progress(progress)
    recipe = recipe or MiniRecipe()
    if steps is not None:
        recipe = replace(recipe, steps=steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = mini_vocabulary(recipe.benchmark)
    tokenizer = build_word_tokenizer(vocab)
    processor = _build_processor(recipe, tokenizer)
    fmt = get_prompt_format(load_benchmark(recipe.benchmark).prompt_format, processor)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        model = _build_model(recipe, tokenizer, seed)
        train = encode_for_training(aux_examples(recipe.n_train, seed, "train"), processor, fmt)
        t0 = time.perf_counter()
        losses = pretrain(model, train, recipe, seed, progress)
        seconds = time.perf_counter() - t0
        accuracy = greedy_accuracy(model, processor, fmt, aux_examples(recipe.n_heldout, seed, "heldout"))
    finally:
        torch.set_num_threads(old_threads)
    per_prompt = ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items() if k != "overall")
    progress.message(f"mini base: held-out accuracy {accuracy['overall']:.1%} ({per_prompt}) after {recipe.steps} steps"
                     f" ({seconds:.0f} s)")
    if accuracy["overall"] < recipe.min_accuracy:
        raise MiniBaseError(
            f"the cvit-mini base reached only {accuracy['overall']:.1%} exact match on its held-out pretraining mix"
            f" (required {recipe.min_accuracy:.0%}; per prompt {accuracy}); recipe {asdict(recipe)}, seed {seed}."
            " Train longer (steps) or check the recipe."
        )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    report = BuildReport(recipe=asdict(recipe), seed=seed, key=recipe.key(seed, vocab), vocab_size=len(vocab),
                         parameters=sum(p.numel() for p in model.parameters()), heldout_accuracy=accuracy,
                         final_loss=sum(losses[-50:]) / max(1, len(losses[-50:])), pretrain_seconds=round(seconds, 2),
                         threads=recipe.threads, environment=_build_environment(), files=_file_hashes(out))
    (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def verify_mini_base(folder: str | os.PathLike) -> dict:
    """Check a built base folder against its ``mini_base.json``; returns the report.

    Raises :class:`MiniBaseError` naming the folder and the file when the report is missing or unreadable, a
    listed file is missing, or a file's sha256 differs from the recorded one (a damaged or edited base).
    """
    from ..files import sha256_file

    folder = Path(folder)
    report_path = folder / REPORT_FILE
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MiniBaseError(f"{report_path}: cannot read the mini base report ({exc})") from None
    files = report.get("files")
    if not isinstance(files, dict) or not files:
        raise MiniBaseError(f"{report_path}: no file hashes recorded (built by an older cvit-bench); rebuild it with "
                            "`cvit-bench mini-base build`")
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise MiniBaseError(f"{path}: missing from the mini base (listed in {REPORT_FILE})")
        actual = sha256_file(path)
        if actual != expected:
            raise MiniBaseError(f"{path}: damaged: sha256 {actual[:16]}… differs from the recorded {expected[:16]}… "
                                f"in {REPORT_FILE} (reinstall cvit-bench or rebuild with `cvit-bench mini-base build`)")
    return report


def shipped_mini_base() -> Path:
    """The prebuilt base shipped with the package, verified file by file (no training, no network)."""
    verify_mini_base(SHIPPED_DIR)
    return SHIPPED_DIR


def cache_root() -> Path:
    """``$CVIT_BENCH_CACHE``, else ``$XDG_CACHE_HOME/cvit-bench``, else ``~/.cache/cvit-bench``."""
    if os.environ.get("CVIT_BENCH_CACHE"):
        return Path(os.environ["CVIT_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cvit-bench"


def cached_mini_base(seed: int = SHIPPED_SEED, *, recipe: MiniRecipe | None = None,
                     cache_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """The base for (recipe, seed): the shipped one for the default recipe and seed, else built on first use
    into the cache (temp folder + atomic rename). ``cache_dir`` overrides :func:`cache_root`."""
    recipe = recipe or MiniRecipe()
    if recipe == MiniRecipe() and seed == SHIPPED_SEED:
        return shipped_mini_base()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / f"mini-base-{recipe.key(seed, mini_vocabulary(recipe.benchmark))}"
    if (final / REPORT_FILE).is_file():
        verify_mini_base(final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mini-base-", dir=root))
    try:
        build_mini_base(tmp, seed=seed, recipe=recipe, progress=progress)
        if final.exists() and not (final / REPORT_FILE).is_file():
            shutil.rmtree(final, ignore_errors=True)   # a broken earlier folder (no report = incomplete)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / REPORT_FILE).is_file():   # not a concurrent builder winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
