"""The TwiML a call speaks: the script read twice by the configured <Say> voice, and how long
such a call takes (for the dry run's estimate and the calls-in-progress cap)."""

from __future__ import annotations

import re

from incident.channels.base import VoiceOut

TWIML_MAX = 4000  # characters Twilio accepts in the `Twiml` parameter of a call
READINGS = 2  # the notice is read twice: a listener who missed the start hears it again
RING_SECONDS = 20.0  # an answered call rings for about this long first
# Speaking rates of text-to-speech at its default speed: Chinese characters (Mandarin or
# Cantonese, one syllable each) and English words per second.
HAN_PER_SECOND = 4.0
WORDS_PER_SECOND = 2.5
# <Say> language of each notice language, unless a Google voice names its own (yue-HK-…).
SAY_LANGUAGES = {"zh-CN": "cmn-CN", "zh-HK": "yue-HK", "en": "en-US"}
# What a customer's call says last, when key presses are taken (receipts.public_url set).
PRESS_ONE = {"zh-CN": "如需回电，请按1。", "zh-HK": "如需回電，請按1。",
             "en": "To be called back, press 1."}
# A staff roll-call call ends with the answer's key: 1 able to work, 2 unable, 3 need help.
PRESS_ANSWER = {"zh-CN": "请按1、2或3作答。", "zh-HK": "請按1、2或3作答。",
                "en": "Press 1, 2 or 3 to answer."}
GATHER_PATH = "/twilio/voice/gather"
_GOOGLE_VOICE = re.compile(r"^Google\.(?P<lang>[a-z]{2,3}-[A-Z]{2})-")
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z0-9]+")


def say_language(lang: str, voice: str) -> str:
    """The <Say language=…> for a notice language spoken by `voice`."""
    named = _GOOGLE_VOICE.match(voice)
    return named.group("lang") if named else SAY_LANGUAGES.get(lang, "en-US")


def twiml(message: VoiceOut) -> str:
    """The call's TwiML: the script, a pause, then the script again (XML-escaped), and with a
    gather URL the "press 1" prompt in a <Gather numDigits="1">."""
    # Imported here: the twilio SDK is heavy, and most commands never build a call.
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    for reading in range(READINGS):
        if reading:
            response.pause(length=1)
        response.say(message.script, voice=message.voice, language=message.language)
    if message.gather_url:
        gather = response.gather(num_digits=1, action=message.gather_url, method="POST")
        gather.say(message.gather_prompt, voice=message.voice, language=message.language)
    return str(response)


def speech_seconds(script: str) -> float:
    """About how long text-to-speech takes to read `script` once."""
    han = len(_HAN.findall(script))
    words = len(_WORD.findall(_HAN.sub(" ", script)))
    return han / HAN_PER_SECOND + words / WORDS_PER_SECOND


def call_seconds(script: str) -> float:
    """About how long an answered call reading `script` lasts, ringing included."""
    return RING_SECONDS + READINGS * speech_seconds(script) + (READINGS - 1)


def calling_seconds(calls: dict[str, tuple[int, float]], *, rate: float,
                    concurrent: int) -> float:
    """About how long `calls` (language → (calls, seconds each)) take from the first start to
    the last hang-up: started at `rate` a second, at most `concurrent` in progress at once."""
    count = sum(n for n, _ in calls.values())
    if not count:
        return 0.0
    talk = sum(n * seconds for n, seconds in calls.values())
    return max(count / rate, talk / concurrent) + talk / count
