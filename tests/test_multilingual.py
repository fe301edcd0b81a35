"""A real multilingual model (Whisper base, the `multilingual` extra): language detection when the client
sends none, an explicit language and translation honoured, unknown languages refused before decoding;
in-process and through a live server built from it."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.test_serving import infer

pytestmark = pytest.mark.slow

# espeak-ng's voices read these; tiny.en could not.
SENTENCES = {
    "de": "Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön.",
    "fr": "Bonjour, je voudrais un café et un croissant, s'il vous plaît.",
    "es": "Buenos días, me gustaría reservar una mesa para dos personas.",
}


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, np.ndarray]:
    from whisper_triton.audio import load_audio

    folder = tmp_path_factory.mktemp("espeak")
    audio = {}
    for language, text in SENTENCES.items():
        subprocess.run(["espeak-ng", "-v", language, "-w", str(folder / f"{language}.wav"), text], check=True)
        audio[language] = load_audio(folder / f"{language}.wav")
    return audio


@pytest.fixture(scope="module")
def base():
    from training.modeling import create_whisper_model_and_processor

    return create_whisper_model_and_processor("base")


def test_base_is_bundled_and_multilingual(base):
    from whisper_triton.manifest import manifest_from_model

    manifest = manifest_from_model(*base)
    assert manifest.is_multilingual and {"de", "fr", "es", "en"} <= set(manifest.tokens.languages)


def test_language_is_detected_per_window_in_process(base, speech):
    from training.torch_backend import torch_transcriber
    from whisper_triton.options import DecodingOptions
    from whisper_triton.vad import SileroVad

    transcriber = torch_transcriber(*base, vad=SileroVad())
    for language, audio in speech.items():
        transcript = transcriber.transcribe(audio)
        assert transcript.language == language, transcript
        translated = transcriber.transcribe(audio, DecodingOptions(language=language, task="translate"))
        assert translated.text and translated.text != transcript.text  # English now


@pytest.fixture(scope="module")
def base_server(tmp_path_factory):
    from tests.artifacts import built_repository
    from whisper_triton.server.launcher import TritonServer

    repository, _ = built_repository("base", "fp32")  # build_model_repository, cached by content
    with TritonServer(repository, log_path=tmp_path_factory.mktemp("base") / "server.log") as server:
        yield server


def test_served_base_detects_honours_and_refuses_languages(base_server, speech):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(base_server.url_grpc)
    for language, audio in speech.items():
        text, segments = infer(client, audio)
        assert text and {s["language"] for s in segments} == {language}, (language, segments)
    english, segments = infer(client, speech["de"], {"language": "de", "task": "translate"})
    assert english != infer(client, speech["de"])[0] and segments[0]["language"] == "de"
    with pytest.raises(InferenceServerException, match="not one this model knows") as raised:
        infer(client, speech["de"], {"language": "xx"})
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
