"""Text normalisers shared by the scorers: the m4c VQA answer processor and the caption tokenisers.

* :func:`normalize_m4c` — the ``EvalAIAnswerProcessor`` of the m4c/LLaVA evaluators (docs/scoring.md,
  vqa_soft@m4c), quirks included, written from that description:

  1. ``word_tokenize``: lower-case, delete ``,`` and ``?``, ``'s`` → `` 's``, strip;
  2. ``\\n`` / ``\\t`` → space, strip;
  3. punctuation: for each of the 21 characters, in list order, delete it everywhere if it is followed or
     preceded by a space in the *input* of this step (or the comma regex matches the input, which never
     happens after step 1), otherwise replace it by a space; then delete ``.`` not followed by a digit, at most
     32 times (``re.UNICODE`` == 32 was passed as ``count``);
  4. lower-case, split on whitespace, map number words, drop articles, expand contractions, join by spaces.

  It is **not idempotent**: ``hes`` → ``he's`` → ``he 's``; 40 periods lose only 32 per pass. What holds (and is
  tested) is: the output is lower-case, canonically spaced, free of the 21 punctuation characters, of articles
  and of number words; and an output without ``'`` and ``.`` is a fixed point.

* :func:`whitespace_tokenize` — the compat caption tokeniser (split on whitespace, nothing else).
* :func:`ptb_java_tokenize` — the COCO caption tokenisation: Stanford CoreNLP 3.4.1 ``PTBTokenizer
  -preserveLines -lowerCase`` (the jar shipped inside pycocoevalcap), then the pycocoevalcap drop-list. As in
  pycocoevalcap, the drop-list names ``-LRB-`` etc. in upper case while ``-lowerCase`` emits ``-lrb-``, so
  bracket tokens are *kept* (as ``-lrb-``, ``-rrb-``, ``-lsb-``, ...). Every line separator inside a caption
  (not only ``\\n``) becomes a space so that the one-caption-per-line alignment cannot shift.
* :func:`ptb_py_tokenize` — a pure-Python approximation of the same pipeline (id variant ``ptb-py``); it
  reproduces the Java output on the caption fixture of ``tests/scoring/test_metrics_normalize.py`` (the agreement
  tolerance is stated there).
"""
from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import CvitError

# --------------------------------------------------------------------------------------------- m4c (docs/scoring.md)

M4C_PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)

M4C_NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

M4C_ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# 120 entries, same keys, order and values as the official VQA code and m4c (docs/scoring.md, vqa_soft@m4c), oddities kept:
# identity entries ``let's``/``she's``, the inverted ``somebody'd`` -> ``somebodyd``, and four capitalised
# keys that can never match because the text is lower-cased first.
M4C_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd",
    "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've",
    "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}

# The first group was meant as a look-behind ``(?<!\d)`` but is a look-ahead for the literal "<=\d", which
# is always satisfied before a ".": effectively "every period not followed by a digit".
M4C_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
M4C_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
M4C_PERIOD_MAX_REPLACEMENTS = 32  # re.UNICODE (== 32) passed in the position of ``count``


def m4c_word_tokenize(text: str) -> str:
    """Step 1: lower-case, delete ``,`` and ``?``, put a space before every ``'s``, strip."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def m4c_process_punctuation(text: str) -> str:
    """Step 3. All three tests look at the step's input ``text``, never at the partly processed output."""
    out = text
    comma_hit = M4C_COMMA_STRIP.search(text) is not None
    for p in M4C_PUNCTUATION:
        if (p + " " in text) or (" " + p in text) or comma_hit:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return M4C_PERIOD_STRIP.sub("", out, count=M4C_PERIOD_MAX_REPLACEMENTS)


def m4c_process_digit_article(text: str) -> str:
    """Step 4: number words → digits, articles dropped, then contractions expanded."""
    words = []
    for word in text.lower().split():
        word = M4C_NUMBER_MAP.get(word, word)
        if word not in M4C_ARTICLES:
            words.append(word)
    return " ".join(M4C_CONTRACTIONS.get(w, w) for w in words)


def normalize_m4c(text: str) -> str:
    """The full m4c answer normaliser (steps 1–4 of docs/scoring.md, The m4c normaliser), applied to predictions and gold answers alike."""
    text = m4c_word_tokenize(text)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = m4c_process_punctuation(text)
    return m4c_process_digit_article(text)


class M4CCache:
    """Memoised :func:`normalize_m4c` for one scoring call (answers repeat a lot; the cache dies with the call)."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}

    def get(self, text: str) -> str | None:
        """The cached normal form, or None when ``text`` was not normalised yet (fast path for hot loops)."""
        return self._memo.get(text)

    def __call__(self, text: str) -> str:
        memo = self._memo
        try:
            return memo[text]
        except KeyError:
            out = memo[text] = normalize_m4c(text)
            return out


# ------------------------------------------------------------------------------------ captions (docs/scoring.md)

# pycocoevalcap's PUNCTUATIONS, verbatim (upper-case bracket names included, which never match, see above).
PTB_DROP: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Everything Python's str.splitlines() treats as a line break; the Java tokeniser must see one caption per line.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

PTB_JAR_NAME = "stanford-corenlp-3.4.1.jar"


def whitespace_tokenize(text: str) -> str:
    """The compat tokenisation: split on whitespace, keep case and punctuation, join by single spaces."""
    return " ".join(text.split())


def _drop_and_join(tokens: Sequence[str]) -> str:
    return " ".join(t for t in tokens if t not in PTB_DROP)


@functools.lru_cache(maxsize=1)
def ptb_jar_path() -> Path | None:
    """The CoreNLP jar shipped inside pycocoevalcap, or None when pycocoevalcap is not installed."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap.tokenizer.ptbtokenizer")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    jar = Path(spec.origin).parent / PTB_JAR_NAME
    return jar if jar.is_file() else None


def java_ptb_available() -> bool:
    """True when both a ``java`` executable and the CoreNLP jar (pycocoevalcap) are present."""
    return shutil.which("java") is not None and ptb_jar_path() is not None


def ptb_java_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenise captions with the Stanford PTBTokenizer in one JVM run, then apply the drop-list.

    Same command as pycocoevalcap (``-preserveLines -lowerCase``), fed through stdin in UTF-8; output lines are
    split on a single space as pycocoevalcap does. Raises :class:`CvitError` when Java or the jar is missing or
    the tokeniser's output does not have one line per caption.
    """
    if not texts:
        return []
    jar = ptb_jar_path()
    java = shutil.which("java")
    if jar is None or java is None:
        raise CvitError(
            "the PTB tokeniser needs a Java runtime ('java' on PATH) and pycocoevalcap (which ships "
            f"{PTB_JAR_NAME}); install them or use the pure-Python variant (metric id cider_d@ptb-py)"
        )
    payload = "".join(_LINE_BREAKS.sub(" ", t) + "\n" for t in texts).encode("utf-8")
    cmd = [java, "-Dfile.encoding=UTF-8", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
           "-encoding", "utf-8", "-preserveLines", "-lowerCase"]
    proc = subprocess.run(cmd, input=payload, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CvitError(f"the Java PTB tokeniser failed (exit {proc.returncode}): "
                        f"{proc.stderr.decode('utf-8', 'replace')[-500:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < len(texts):  # trailing empty captions may produce no line at all
        lines.extend([""] * (len(texts) - len(lines)))
    if len(lines) != len(texts):
        raise CvitError(f"the Java PTB tokeniser returned {len(lines)} lines for {len(texts)} captions")
    return [_drop_and_join(line.rstrip().split(" ")) for line in lines]


# --- pure-Python approximation of PTBTokenizer (-lowerCase) -----------------------------------------

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
# Abbreviations that keep their final period (a subset of PTBLexer's lists, the ones seen in captions);
# the first set matches in any case, the state names only capitalised (as in PTBLexer: ``ill.`` is a word).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr drs st jr sr co cos inc ltd corp bros vs etc mt ft ave blvd rd no jan feb mar apr jun jul aug "
    "sep sept oct nov dec gen gov sen rep prof sgt capt col lt rev hon est tel ext sq dept univ assn intl approx "
    "esq pres maj adm det ph.d ed.d".split()
)
_ABBREVIATIONS_CAPITALISED = frozenset(
    "Ala Ariz Ark Calif Colo Conn Del Fla Ga Ill Ind Kan Kans Ky La Md Mass Mich Minn Miss Mo Mont Neb Nev "
    "Okla Ore Pa Penn Tenn Tex Va Vt Wash Wis Wyo".split()
)
# Whole words PTB splits into two tokens.
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me"),
                "'tis": ("'t", "is"), "'twas": ("'t", "was")}
_ACRONYM = re.compile(r"[^\W\d_](?:\.[^\W\d_])+")  # u.s, p.m, e.g (the final period follows)
_APOSTROPHE_WORDS = re.compile(r"'(?:em|tis|twas|cause|til|n'|\d0s)(?![\w'])", re.IGNORECASE)
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.IGNORECASE)
_WORD = re.compile(
    r"\w+(?:(?:[-./&]|(?<=\d),(?=\d)|(?<=\d):(?=\d)|'(?=\w))\w+)*"
)
_SCANNER = re.compile(
    r"(?P<url>(?:https?://|www\.)[^\s\"'()\[\]{}<>]*[^\s\"'()\[\]{}<>.,!?;:])"
    r"|(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
    r"|(?P<tag></?[A-Za-z][^<>\s]*>)"
    r"|(?P<amp>&amp;)"
    r"|(?P<smiley>[:;]-?[()](?![\w]))"
    r"|(?P<ellipsis>\.\.\.+|…)"
    r"|(?P<dashes>--+|[–—])"
    r"|(?P<bang>[!?]+)"
    r"|(?P<apos_word>'(?=(?:em|tis|twas|cause|til|n'|\d0s)(?![\w'])))"
    r"|(?P<word>\w)"
    r"|(?P<other>\S)",
    re.IGNORECASE,
)


def _split_word(word: str) -> list[str]:
    """Clitic and special-word splitting of one word token (PTB rules: ``can't`` → ``ca n't``)."""
    low = word.lower()
    if "'" in word and "-" in word.strip("-"):  # can't-miss -> ca n't - miss (the hyphen is dropped later)
        parts = word.split("-")
        out = _split_word(parts[0])
        for part in parts[1:]:
            out += ["-"] + (_split_word(part) if part else [])
        return out
    if low in _SPLIT_WORDS:
        cut = len(_SPLIT_WORDS[low][0])
        return [word[:cut], word[cut:]]
    i = low.find("'n'")
    if i > 0:  # rock'n'roll -> rock 'n' roll
        return _split_word(word[:i]) + ["'n'"] + (_split_word(word[i + 3:]) if word[i + 3:] else [])
    m = _CLITIC.match(word)
    if m:
        return [m.group(1), m.group(2)]
    return [word]


def _ptb_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for chunk in text.split():
        pos, end = 0, len(chunk)
        at_start = True
        while pos < end:
            m = _SCANNER.match(chunk, pos)
            assert m is not None  # the last alternative matches any non-space character
            kind = m.lastgroup
            if kind == "word":
                wm = _WORD.match(chunk, pos)
                word = wm.group(0)
                stop = wm.end()
                # A final period stays attached to acronyms (u.s.) and known abbreviations (mr.).
                if stop < end and chunk[stop] == "." and not chunk.startswith("..", stop) and (
                    _ACRONYM.fullmatch(word) or (len(word) == 1 and word.isalpha()) or word.lower() in _ABBREVIATIONS
                    or word in _ABBREVIATIONS_CAPITALISED
                ):
                    word += "."
                    stop += 1
                tokens.extend(_split_word(word))
                pos = stop
            elif kind == "apos_word":
                wm = _APOSTROPHE_WORDS.match(chunk, pos)
                tokens.extend(_split_word(wm.group(0)))
                pos = wm.end()
            else:
                tok = m.group(0)
                if kind == "amp":
                    tok = "&"
                elif kind == "smiley":
                    tok = tok[:-1] + _BRACKETS[tok[-1]]
                elif kind == "ellipsis":
                    tok = "..."
                elif kind == "dashes":
                    tok = "--"
                elif tok in _BRACKETS:
                    tok = _BRACKETS[tok]
                elif tok in ('"', "\u201c", "\u201d"):
                    tok = "``" if at_start and tok != "\u201d" else "''"
                elif tok == "\u2018":
                    tok = "`"
                elif tok in ("'", "\u2019"):
                    tok = "`" if (at_start and tok == "'" and m.end() < end) else "'"
                tokens.append(tok)
                pos = m.end()
            at_start = False
    return tokens


def ptb_py_tokenize(text: str) -> str:
    """Pure-Python approximation of ``PTBTokenizer -preserveLines -lowerCase`` + the pycocoevalcap drop-list.

    Rules: whitespace chunks are scanned left to right; URLs, e-mail addresses, HTML tags, ``...``, ``--`` and
    runs of ``!``/``?`` are single tokens; words keep internal ``-``, ``.``, ``/``, ``&``, ``'`` and digit
    separators (``1,000``, ``10:30``); a final period stays only on acronyms and known abbreviations; clitics
    ``n't 's 're 've 'll 'd 'm`` are split off; brackets become ``-lrb-``-style names (kept, as in the Java
    pipeline); quotes become PTB quote tokens (dropped); every other symbol is its own token. Then lower-case,
    drop the drop-list tokens and join with single spaces.
    """
    return _drop_and_join([t.lower() for t in _ptb_tokens(_LINE_BREAKS.sub(" ", text))])
