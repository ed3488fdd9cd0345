"""One sandboxed jinja2 environment for notice templates, and SMS segment counting."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import jinja2
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from incident.controls import UNSAFE
from incident.errors import Location, TemplateInvalid
from incident.languages import LANGUAGES

PHASES = ("initial", "update", "eta_changed", "resolved")
INTERNAL_PHASE = "notice"  # the internal set has one template; the notice's kind varies in it
ACK_PHASE = "ack"  # the acknowledgement of a customer's reply (templates/replies/ack)
CHANNELS = ("email", "sms", "voice")

# The playbook content depends on these names; change them only together with the templates.
_NAMES = {
    "email": {
        "subject": "{set}/{phase}/email.subject.{lang}.txt",
        "text": "{set}/{phase}/email.text.{lang}.txt",
        "html": "{set}/{phase}/email.html.{lang}.html",
    },
    "sms": {"text": "{set}/{phase}/sms.{lang}.txt"},
    "voice": {"text": "{set}/{phase}/voice.{lang}.txt"},  # the script a call reads aloud
}

# 3GPP TS 23.038 default alphabet, in code order 0x00-0x7F; 0x1B (ESC) is left out because it
# only introduces the extension table.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Each of these is sent as ESC + code, so it takes two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_UNDEFINED_NAME = re.compile(r"^'(?P<name>[^']*)' is undefined$")
_UNDEFINED_MEMBER = re.compile(r" has no (?:attribute|element) (?P<name>.+)$")
_BLANK_RUNS = re.compile(r"\n{3,}")
_CJK_BREAK = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])\s+(?=[\u3000-\u9fff\uff00-\uffef])")


@dataclass(frozen=True)
class SmsInfo:
    """How an SMS text is encoded and how many segments (billable parts) it takes."""

    encoding: Literal["GSM-7", "UCS-2"]
    units: int
    segments: int


@dataclass(frozen=True)
class RenderedEmail:
    """A rendered email notice: one-line subject, plain text and HTML bodies."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedSms:
    """A rendered SMS notice with its encoding and segment count."""

    text: str
    info: SmsInfo


def template_names(template_set: str, phase: str, channel: str, lang: str) -> dict[str, str]:
    """The template name of each part (subject/text/html, or text for SMS) of one notice."""
    if phase not in PHASES and phase not in (INTERNAL_PHASE, ACK_PHASE):
        raise ValueError(f"unknown phase {phase!r} (use one of {', '.join(PHASES)})")
    if channel not in _NAMES:
        raise ValueError(f"no templates for channel {channel!r} (use one of "
                         f"{', '.join(CHANNELS)})")
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r} (use one of {', '.join(LANGUAGES)})")
    return {part: pattern.format(set=template_set, phase=phase, lang=lang)
            for part, pattern in _NAMES[channel].items()}


def sms_segments(text: str) -> SmsInfo:
    """Encoding, units (septets or UTF-16 code units) and segment count of an SMS text."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        sizes = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return SmsInfo("GSM-7", sum(sizes), _count_segments(sizes, 160, 153))
    # Characters beyond the BMP (most emoji) are a UTF-16 surrogate pair: two units.
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsInfo("UCS-2", sum(sizes), _count_segments(sizes, 70, 67))


_GSM7_BASIC_TEXT = re.compile("[" + re.escape("".join(sorted(GSM7_BASIC))) + "]*")
_GSM7_TEXT = re.compile("[" + re.escape("".join(sorted(GSM7_BASIC | GSM7_EXTENSION))) + "]*")
_ONE_UNIT_UCS2 = re.compile("[^\\s\U00010000-\U0010FFFF]*")  # BMP, no line breaks or tabs


def uniform_shape(text: str) -> tuple[bool, int] | None:
    """(whether GSM-7, length) of a value inserted into an SMS when each of its characters
    takes one unit (septet or UTF-16 code unit) whatever the encoding of the SMS, so that the
    segments of the SMS depend only on that; None otherwise (an ESC or surrogate pair, or
    white space that tidying could change)."""
    if not _ONE_UNIT_UCS2.fullmatch(text.replace(" ", "")):
        return None
    if _GSM7_BASIC_TEXT.fullmatch(text):
        return True, len(text)
    if _GSM7_TEXT.fullmatch(text):
        return None  # GSM-7 with an ESC character: two septets in a GSM-7 SMS
    return False, len(text)


def _count_segments(sizes: Sequence[int], single: int, per_part: int) -> int:
    total = sum(sizes)
    if total == 0:
        return 0
    if total <= single:
        return 1
    # Senders never split an ESC pair or a surrogate pair across parts: such a character
    # moves whole to the next part, which can add a part a plain division would miss.
    parts, used = 1, 0
    for size in sizes:
        if used + size > per_part:
            parts, used = parts + 1, 0
        used += size
    return parts


# This environment's own file names in the cache directory: templates compiled with other
# settings (another environment's trim_blocks, say) would be different code.
_COMPILED_PATTERN = "incident-notices-%s.cache"


class _CompiledTemplates(jinja2.FileSystemBytecodeCache):
    """jinja2's cache of compiled templates on disk, where trouble is never an error: a file
    that cannot be read, written or unmarshalled is a miss (the template is compiled again)."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # unreadable, truncated (pickle, marshal): a miss
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def compiled_templates(directory: Path | None = None) -> jinja2.BytecodeCache | None:
    """Where a Renderer keeps the templates it compiled, for the next process.

    Compiling the notice templates a start renders (jinja2: parse, generate and compile
    Python) costs about 0.05 s, on the way to the first message; read back they cost a tenth.
    jinja2 reuses a compiled template only while its source's checksum, jinja2's and Python's
    versions are the same. By default in jinja2's directory for this user (in the temp
    directory, mode 0700, which jinja2 checks); None (no cache) when there is no safe one."""
    try:
        return _CompiledTemplates(str(directory) if directory else None, _COMPILED_PATTERN)
    except (OSError, RuntimeError):
        return None


class Renderer:
    """Renders notice templates from a search path (first directory wins) in a sandbox;
    with `compiled` (compiled_templates()), compiled templates are kept for later processes."""

    def __init__(self, search_path: Sequence[Path],
                 compiled: jinja2.BytecodeCache | None = None) -> None:
        self.search_path = [Path(p) for p in search_path]
        self.env = ImmutableSandboxedEnvironment(
            bytecode_cache=compiled,
            loader=FileSystemLoader([str(p) for p in self.search_path]),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html", "htm"),
                                         default_for_string=False),
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["spoken_digits"] = spoken_digits
        self.env.filters["without_year"] = without_year

    def render_email(self, template_set: str, phase: str, lang: str,
                     context: Mapping[str, Any]) -> RenderedEmail:
        """Render subject, text and HTML of one email notice; TemplateInvalid on any error."""
        names = self._names(template_set, phase, "email", lang)
        parts: dict[str, str] = {}
        problems: list[tuple[Location, str]] = []
        # Render every part even after a failure so that one run reports all of them.
        for part, name in names.items():
            try:
                parts[part] = self._render(name, context)
            except TemplateInvalid as exc:
                problems.extend(exc.problems)
        if problems:
            raise TemplateInvalid(f"email templates of {template_set}/{phase} ({lang}) "
                                  "cannot be rendered", problems=problems)
        subject = " ".join(parts["subject"].split())
        if not subject:
            raise TemplateInvalid(f"template {names['subject']} renders an empty subject",
                                  problems=[(Location(file=names["subject"]), "empty subject")])
        return RenderedEmail(subject=subject, text=parts["text"], html=parts["html"])

    def render_sms(self, template_set: str, phase: str, lang: str,
                   context: Mapping[str, Any]) -> RenderedSms:
        """Render one SMS notice, tidy its whitespace and count its segments."""
        name = self._names(template_set, phase, "sms", lang)["text"]
        text = tidy_sms(self._render(name, context))
        if not text:
            raise TemplateInvalid(f"template {name} renders an empty SMS",
                                  problems=[(Location(file=name), "empty SMS text")])
        return RenderedSms(text=text, info=sms_segments(text))

    def render_voice(self, template_set: str, phase: str, lang: str,
                     context: Mapping[str, Any]) -> str:
        """Render the script a call reads aloud: one paragraph, whitespace tidied."""
        name = self._names(template_set, phase, "voice", lang)["text"]
        # One paragraph; no space between Chinese sentences (a TTS voice pauses at one).
        text = " ".join(_CJK_BREAK.sub("", tidy_sms(self._render(name, context))).split())
        if not text:
            raise TemplateInvalid(f"template {name} renders an empty call script",
                                  problems=[(Location(file=name), "empty call script")])
        return text

    def check(self, template_set: str, phases: Iterable[str], channels: Iterable[str],
              langs: Iterable[str], context: Mapping[str, Any]) -> list[tuple[Location, str]]:
        """Render every phase × channel × language and collect all problems (none = good)."""
        problems: list[tuple[Location, str]] = []
        for phase, channel, lang in itertools.product(list(phases), list(channels),
                                                      list(langs)):
            try:
                if channel == "sms":
                    self.render_sms(template_set, phase, lang, context)
                elif channel == "email":
                    self.render_email(template_set, phase, lang, context)
                elif channel == "voice":
                    self.render_voice(template_set, phase, lang, context)
                else:
                    self._names(template_set, phase, channel, lang)
            except TemplateInvalid as exc:
                problems.extend(exc.problems or [(Location(), exc.message)])
        # A broken shared partial would otherwise be reported once per combination.
        return list(dict.fromkeys(problems))

    def _names(self, template_set: str, phase: str, channel: str, lang: str) -> dict[str, str]:
        try:
            return template_names(template_set, phase, channel, lang)
        except ValueError as exc:
            raise TemplateInvalid(f"cannot choose a template: {exc}",
                                  problems=[(Location(file=template_set), str(exc))]) from None

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(dict(context))
        except Exception as exc:
            # Whatever a template does wrong (syntax, undefined name, sandbox, a filter's
            # TypeError) is a problem of that template, reported with its file and line.
            raise self._invalid(name, exc) from exc

    def _invalid(self, name: str, exc: Exception) -> TemplateInvalid:
        """Turn an exception raised while loading or rendering `name` into TemplateInvalid."""
        where = ", ".join(str(p) for p in self.search_path) or "(empty search path)"
        file, line = _template_frame(exc.__traceback__)
        field: str | None = None
        headline = f"template {name} cannot be rendered"
        if isinstance(exc, jinja2.TemplateSyntaxError):
            file, line = exc.filename or exc.name or file or name, exc.lineno
            message = f"syntax error: {exc.message}"
        elif isinstance(exc, jinja2.TemplateNotFound):
            missing = exc.name if isinstance(exc.name, str) else name
            if missing == name:
                headline = f"template {name} not found"
                message = f"not found in {where}"
            else:
                message = f"includes {missing}, which is not found in {where}"
        elif isinstance(exc, jinja2.UndefinedError):
            field = _undefined_name(exc.message or "")
            message = f"undefined: {exc.message}"
        elif isinstance(exc, SecurityError):
            message = f"not allowed in a template: {exc}"
        else:
            message = f"{type(exc).__name__}: {exc}"
        location = Location(file=file or name, line=line, field=field)
        return TemplateInvalid(headline, problems=[(location, message)])


def _template_frame(tb: TracebackType | None) -> tuple[str | None, int | None]:
    """File and line of the innermost template frame of a traceback (an include's, if any)."""
    found: tuple[str | None, int | None] = (None, None)
    while tb is not None:
        frame_globals = tb.tb_frame.f_globals
        template = frame_globals.get("__jinja_template__")
        if "__jinja_exception__" in frame_globals:
            # Template.render rewrites the stack into fake frames that carry the template's
            # own file name and line number.
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        elif isinstance(template, jinja2.Template):
            found = (template.filename, template.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found


def _undefined_name(message: str) -> str | None:
    match = _UNDEFINED_NAME.match(message) or _UNDEFINED_MEMBER.search(message)
    if not match:
        return None
    return match.group("name").strip("'\"")


def spoken_digits(number: object) -> str:
    """A phone number as text-to-speech should read it: digit by digit, groups apart
    ("95555" → "9 5 5 5 5", "+852 3000 0000" → "852, 3 0 0 0, 0 0 0 0")."""
    groups = re.findall(r"\d+", str(number))
    return ", ".join(" ".join(group) for group in groups)


_YEAR = re.compile(r"(?<!\d)\d{4}-(?=\d\d-\d\d)")


def without_year(text: object) -> str:
    """A shown time without its year, wherever its zone label stands ("香港時間2026-11-24
    16:05" → "香港時間11-24 16:05", "2026-11-24 16:05 Hong Kong Time" → "11-24 16:05 Hong Kong
    Time"); any other text unchanged."""
    return _YEAR.sub("", str(text), count=1)


def tidy_sms(text: str) -> str:
    """The SMS text as sent: control characters, trailing spaces and runs of blank lines
    removed."""
    # Trailing spaces and extra blank lines cost septets without showing on a phone; an ESC
    # or NUL from any data that reached the template must not reach the handset.
    lines = [UNSAFE.sub("", line).rstrip() for line in re.split(r"\r\n|\r|\n", text)]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
