"""Untrusted text: the one place where each output neutralises what a submission wrote.

A submission is hostile, and so is every character it hands the grader: its exception messages and
tracebacks, what it prints, the names of its files, classes, functions and variables, its source
lines. Any of them can carry terminal control sequences (clear the screen, retitle the window, a
green "PASSED", text hidden by its colour), GitHub workflow commands (``::add-mask::``,
``::stop-commands::``, a forged ``::error::``, ``##[...]`` anywhere in a line), spreadsheet
formulas (``=``, ``+``, ``-``, ``@``), markdown or HTML, or characters XML 1.0 cannot hold.

How it is kept from doing harm, in four layers:

1. **The report marks it.** Every field that can hold such text is typed ``report.Untrusted``
   (``Annotated[str, UNTRUSTED]``; ``Evidence.details`` is a marked container). A gradkit message
   that quotes the submission ("train_neural_net raised {type}: {message}") is untrusted as a
   whole: the mark is on the field, so the quoted part cannot lose it on the way. A model test
   fails when a string field is neither marked nor listed as gradkit's own words.
2. **Each renderer starts from ``prepared(report, output)``**: a copy whose marked strings have
   been through that output's character floor: control characters, bidi overrides, invisible and
   ignorable code points made visible (for JSON and XML, whose serialisers escape and whose
   documents are guarded in layer 4, only what they cannot carry), so a text renderer cannot
   emit a raw control character of a submission whatever it does next.
3. **Each renderer places the text with the helper for its context**, never by pasting it into
   markup: ``terminal_text`` (a ``rich.text.Text``: rich markup in it is never interpreted),
   ``markdown_text``/``markdown_code``/``markdown_block``, ``actions_data``/``actions_property``
   (the workflow-command escapes), ``xml_text`` (then the XML library escapes),
   ``csv_cell`` (OWASP's formula prefix), ``html_text`` (for the HTML view).
4. **Whatever reaches stdout passes a document guard last**: ``command_safe`` (terminal text),
   ``json_document`` and ``xml_document``. The Actions runner reads a line as a command when it
   starts with ``::`` after leading white space, or holds ``##[`` anywhere (its older syntax); the
   guard breaks both, and only gradkit's own annotations (``render.github``) are written after it.
   An HTML page printed to stdout passes ``html_document``.

``tests/test_untrusted_text.py`` puts arbitrary strings into every marked field and holds every
renderer to its invariants, and runs ``tests/data/hostile/hostile_text.py`` through the real CLI.

For the HTML view: ``html_text`` (controls visible, then escaped, as ``markupsafe.Markup``).
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from typing import Any, Callable, get_args

from pydantic import BaseModel

from gradkit.report import UNTRUSTED, Report, no_lone_surrogates

#: Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties) outside the Cf category:
#: invisible when shown (a name can start with one), and ignored by collation-based matching such
#: as .NET's culture-aware ``StartsWith``/``IndexOf``, which the Actions runner uses
_IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
              (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0),
              (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
_HAZARD_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")
#: everything outside printable ASCII is looked at one by one (rare in gradkit's own words)
_CANDIDATE = re.compile(r"[^\x20-\x7e]")
#: the same, less the white space a serialised document keeps as it is (a JSON or XML document
#: has a newline on every line: none of them is worth a call)
_CANDIDATE_IN_JSON = re.compile(r"[^\x20-\x7e\n]")
_CANDIDATE_IN_XML = re.compile(r"[^\x20-\x7e\n\t]")


def is_hazard(char: str) -> bool:
    """Whether one character must not reach an output as itself: C0 and C1 controls, DEL,
    format characters (bidi overrides, zero-width ones, the BOM), surrogates, line and paragraph
    separators, and Unicode's other default-ignorable code points."""
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:
        return True
    if code < 0xA0:
        return False
    if any(low <= code <= high for low, high in _IGNORABLE):
        return True
    return unicodedata.category(char) in _HAZARD_CATEGORIES


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: str, keep: str = "") -> str:
    """``text`` with every hazardous character (``is_hazard``) written as a visible escape
    (``\\x1b``, ``\\u202e``, ``\\U000e0001``), except those in ``keep`` (e.g. ``"\\n"``)."""
    def replace(match: re.Match) -> str:
        char = match.group()
        return char if char in keep or not is_hazard(char) else _escaped(char)

    return _CANDIDATE.sub(replace, text)


# -- the terminal ------------------------------------------------------------------------------

def terminal_text(text: str, style: str = "", *, multiline: bool = False):
    """A ``rich.text.Text`` of untrusted text: controls visible, newlines too unless
    ``multiline``, and never read as rich markup (``[bold green]`` stays those characters)."""
    from rich.text import Text

    return Text(visible(text, keep="\n" if multiline else ""), style=style)


#: what may precede a command on its line: white space, rich's own styling, and characters that
#: are invisible to the runner's matching (the neutralisers above already escape those)
_LEAD = re.compile(r"(?:\s|\x1b\[[0-?]*[ -/]*[@-~]|[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5"
                   r"\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f"
                   r"\ufeff\uffa0])*")


def command_safe(text: str, *, colon: str = "\\:", hash_: str = "#\\[") -> str:
    """Text for stdout in which no line is a GitHub Actions workflow command.

    A line that starts with ``::`` once white space (and styling) is skipped gets its first
    ``:`` written as ``colon``; every ``##[`` becomes ``#`` + ``hash_`` (``##\\[`` for people to
    read; ``json_document`` and ``xml_document`` pass escapes that keep their data as it was).
    Lines split where the runner splits them: at ``\\n`` and ``\\r`` (and, to be safe, wherever
    Python would).
    """
    if "::" not in text and "##[" not in text:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        line = line.replace("##[", "#" + hash_)
        start = _LEAD.match(line).end()
        if line.startswith("::", start):
            line = line[:start] + colon + line[start + 1:]
        out.append(line)
    return "".join(out)


# -- GitHub Actions ----------------------------------------------------------------------------

def actions_data(text: str) -> str:
    """The data of a workflow command (after ``::error ...::``): escaped as the runner unescapes
    it (``%`` ``\\r`` ``\\n``), other controls made visible, so it stays on its one line."""
    text = visible(text, keep="\r\n")
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def actions_property(text: str) -> str:
    """A property value of a workflow command (``file=``, ``title=``): also ``:`` and ``,``."""
    return actions_data(text).replace(":", "%3A").replace(",", "%2C")


# -- markdown (Gradescope's output, the Actions job summary) ---------------------------------

#: what opens inline markup anywhere in a line: escapes, code, emphasis, links and images,
#: HTML, entities, table cells, strikethrough, math, mentions, autolinks (``://``), references
_INLINE_MARKUP = re.compile(r"([\\`*_\[\]<>&|~$@:#!])")
_WWW = re.compile(r"(?i)(www)\.")
_ORDERED_ITEM = re.compile(r"^(\d+)([.)])")


def markdown_text(text: str) -> str:
    """Untrusted text as literal markdown inline text, on one line (controls and newlines
    visible): every character that could open inline markup backslash-escaped (CommonMark: then
    always literal), and a start that could open a block (a list, heading, quote, rule, table or
    indented code) made literal too, so it can also begin a paragraph."""
    text = _INLINE_MARKUP.sub(r"\\\1", visible(text).lstrip(" "))
    text = _ORDERED_ITEM.sub(r"\1\\\2", _WWW.sub(r"\1\\.", text))
    if text and text[0] in string.punctuation and text[0] != "\\":
        text = "\\" + text
    return text


def _longest_run(text: str, char: str = "`") -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


def markdown_code(text: str, *, in_table: bool = False) -> str:
    """Untrusted text as one inline code span: fenced by more backticks than any run in it, on
    one line (controls and newlines visible); ``in_table`` escapes ``|``, which GitHub's tables
    split cells at even inside code."""
    text = visible(text)
    if not text:
        return ""
    fence = "`" * (_longest_run(text) + 1)
    if text[0] in "` " or text[-1] in "` ":
        text = f" {text} "
    if in_table:
        text = text.replace("|", "\\|")
    return f"{fence}{text}{fence}"


def markdown_block(text: str, info: str = "text") -> str:
    """Untrusted text as a fenced code block: its lines kept, the fence longer than any backtick
    run in it, so nothing in it closes the block or is read as markdown or HTML."""
    text = visible(text, keep="\n\t")
    fence = "`" * max(3, _longest_run(text) + 1)
    return f"{fence}{info}\n{text}\n{fence}"


# -- spreadsheets ------------------------------------------------------------------------------

#: a cell starting with one of these is a formula to Excel, LibreOffice or Google Sheets (OWASP,
#: "CSV Injection"), and in East Asian locales their full-width forms are too
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(text: str) -> str:
    """A gradebook cell from untrusted text: controls visible; prefixed with ``'`` when it
    starts (even after spaces) like a formula, as OWASP recommends. The csv module quotes it."""
    formula = text.lstrip(" ").startswith(FORMULA_STARTS) or \
        text.lstrip().startswith(FORMULA_STARTS)
    text = visible(text)
    return "'" + text if formula else text


# -- XML ---------------------------------------------------------------------------------------

#: characters XML 1.0 cannot hold at all
_XML_ILLEGAL = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """Untrusted text for the XML library: what XML 1.0 cannot hold written visibly (``\\x1b``,
    as pytest's junitxml does); the library escapes the rest, ``xml_document`` the hazards."""
    return _XML_ILLEGAL.sub(lambda m: _escaped(m.group()), text)


def xml_document(document: str) -> str:
    """A serialised XML document, safe to print: every hazardous character the document holds
    (in text or attribute values; never in gradkit's markup) as a character reference, which
    any parser reads back as the same character, then ``command_safe`` with references too."""
    document = _CANDIDATE_IN_XML.sub(
        lambda m: f"&#x{ord(m.group()):x};" if is_hazard(m.group()) else m.group(), document)
    return command_safe(document, colon="&#58;", hash_="&#35;[")


# -- an HTML document on stdout ---------------------------------------------------------------

def html_document(document: str) -> str:
    """A serialised HTML page, safe to print (``gradkit check --format html`` to a terminal or
    under GitHub Actions): every hazardous character as a numeric character reference, which a
    browser shows as the same character, then ``command_safe`` with references too (a line of
    the page's text can start with ``::``, and a browser shows ``&#58;`` as ``:``)."""
    return xml_document(document)


# -- JSON --------------------------------------------------------------------------------------

def _json_escape(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_document(document: str) -> str:
    """A serialised JSON document, safe to print, with the same data: hazardous characters
    (only ever inside strings: JSON's own white space is spaces and newlines) as ``\\u``
    escapes, and ``##[`` as ``#\\u0023[``. A JSON line never starts with ``::``."""
    document = _CANDIDATE_IN_JSON.sub(
        lambda m: _json_escape(m.group()) if is_hazard(m.group()) else m.group(), document)
    return command_safe(document, colon=":", hash_="\\u0023[")


# -- HTML --------------------------------------------------------------------------------------

def html_text(text: str, *, multiline: bool = True):
    """Untrusted text for HTML (e.g. a jinja2 template with autoescape): controls visible
    (newlines kept when ``multiline``), then HTML-escaped. Returns ``markupsafe.Markup``, which
    an autoescaping template inserts as it is (without escaping it twice); a ``str`` escaped by
    ``html.escape`` where markupsafe is not installed."""
    text = visible(text, keep="\n" if multiline else "")
    try:
        from markupsafe import escape
    except ImportError:  # jinja2 brings it; without jinja2 there is no template to fear
        import html

        return html.escape(text, quote=True)
    return escape(text)


# -- the marks in the model --------------------------------------------------------------------

def _marked(annotation: Any, metadata: list) -> bool:
    if UNTRUSTED in metadata:
        return True
    return UNTRUSTED in getattr(annotation, "__metadata__", ()) or any(
        _marked(arg, []) for arg in get_args(annotation))


def untrusted_fields(model: type[BaseModel]) -> list[str]:
    """The names of ``model``'s fields marked untrusted (not those of the models inside it)."""
    return list(_marked_fields(model))


@functools.cache
def _marked_fields(model: type[BaseModel]) -> tuple[str, ...]:
    # a class's marks never change: read them once per class, not once per instance (a report
    # holds hundreds of models, and each output walks them all)
    return tuple(name for name, info in model.model_fields.items()
                 if _marked(info.annotation, info.metadata))


def _all_strings(value: Any, floor: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return floor(value)
    if isinstance(value, dict):
        return {_all_strings(k, floor): _all_strings(v, floor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_all_strings(v, floor) for v in value)
    return value


def map_untrusted(model: BaseModel, floor: Callable[[str], str]) -> BaseModel:
    """A copy of ``model`` with ``floor`` applied to every marked string, at any depth (every
    string inside a marked container too); the original is left as it was."""
    changes: dict[str, Any] = {}
    marked = _marked_fields(type(model))
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in marked:
            changes[name] = _all_strings(value, floor)
        elif isinstance(value, BaseModel):
            changes[name] = map_untrusted(value, floor)
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            changes[name] = [map_untrusted(v, floor) if isinstance(v, BaseModel) else v
                             for v in value]
    return model.model_copy(update=changes)


#: the character floor of each output (see ``prepared``)
FLOORS: dict[str, Callable[[str], str]] = {
    "terminal": lambda text: visible(text, keep="\n"),
    "markdown": lambda text: visible(text, keep="\n"),
    "actions": lambda text: visible(text, keep="\n\r"),
    "csv": visible,
    "html": lambda text: visible(text, keep="\n"),
    "prairielearn": lambda text: visible(text, keep="\n"),
    "xml": xml_text,
    # data as it is, but for what UTF-8 cannot carry (the model's validator already did this,
    # unless a string was assigned after validation)
    "json": no_lone_surrogates,
}


def prepared(report: Report, output: str) -> Report:
    """The report a renderer for ``output`` works from: every marked string through that
    output's floor: controls visible; for XML only what XML cannot hold, and for JSON only lone
    surrogates, the rest being data that the library escapes (``xml_document`` and
    ``json_document`` then escape what a terminal or the Actions runner would act on)."""
    return map_untrusted(report, FLOORS[output])  # type: ignore[return-value]
