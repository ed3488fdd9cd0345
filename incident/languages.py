"""The notice languages: Simplified Chinese (mainland), Traditional Chinese as written in Hong
Kong, and English; Traditional text derived from Simplified with OpenCC (`s2hk`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import opencc

Language = Literal["zh-CN", "zh-HK", "en"]
LANGUAGES: tuple[Language, ...] = ("zh-CN", "zh-HK", "en")
CHINESE: tuple[Language, ...] = ("zh-CN", "zh-HK")

# What a Chinese notice says when the supervisor typed the text in English only: the English
# follows a Chinese lead-in, so a Chinese reader knows why it is there.
ENGLISH_ONLY = {"zh-CN": "详情（英文）：", "zh-HK": "詳情（英文）："}


@lru_cache(maxsize=2)
def _converter(config: str) -> opencc.OpenCC:
    # Loading a configuration's dictionaries takes a few milliseconds: once per process.
    return opencc.OpenCC(config)


def to_hk(text: str) -> str:
    """Simplified Chinese text in Traditional characters in Hong Kong standard forms (OpenCC
    s2hk); Latin text, digits and markup pass through unchanged."""
    return _converter("s2hk").convert(text) if text else text


def to_simplified(text: str) -> str:
    """Hong Kong Traditional text in Simplified characters (OpenCC hk2s)."""
    return _converter("hk2s").convert(text) if text else text


def chinese_text(lang: str, english: str, chinese: str | None = None,
                 hong_kong: str | None = None) -> str:
    """What a notice in `lang` shows of a text the supervisor typed: English for `en`; in
    Chinese the text typed for that language, else the other Chinese one converted (s2hk or
    hk2s); with no Chinese text at all, the English after a Chinese lead-in (empty stays
    empty)."""
    if lang not in CHINESE:
        return english
    if lang == "zh-HK" and (hong_kong or chinese):
        return hong_kong or to_hk(chinese or "")
    if chinese or hong_kong:
        return chinese or to_simplified(hong_kong or "")
    return f"{ENGLISH_ONLY[lang]}{english}" if english else ""


def document_language(lang: str) -> str:
    """The language of a document written in zh-CN and en only (the post-mortem report, a
    regulator draft) for someone whose language is `lang`: zh-HK readers get the Chinese."""
    return "zh-CN" if lang == "zh-HK" else lang
