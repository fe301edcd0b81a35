"""Property-based tests (hypothesis): whatever a client sends, the request handling answers with a
result or its own clear error, never a crash; and the live server never calls a client's mistake its own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from whisper_triton.audio import AudioError, load_audio
from whisper_triton.options import DecodingOptions, OptionsError
from whisper_triton.serving import Limits, RequestError, request_audio

FIELDS = [
    "beam_size",
    "temperature",
    "timestamps",
    "best_of",
    "top_k",
    "top_p",
    "language",
    "seed",
    "initial_prompt",
    "max_length",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "logprob_threshold",
    "vad_filter",
    "speech_threshold",
    "num_beams",
    "unknown",
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
OPTIONS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5)


@settings(max_examples=300, deadline=None)
@given(OPTIONS)
def test_any_options_object_is_accepted_or_refused_with_options_error(data):
    try:
        options = DecodingOptions.from_dict(data)
    except OptionsError as error:
        assert str(error)
        return
    assert DecodingOptions.from_json(options.to_json()) == options  # what is accepted round-trips


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float32, st.integers(0, 4000), elements=st.floats(width=32, allow_nan=True, allow_infinity=True)
    )
)
def test_any_pcm_is_accepted_or_refused_with_request_error(audio):
    try:
        pcm = request_audio(audio, None, Limits(max_seconds=1.0))
    except RequestError as error:
        assert str(error)
        return
    assert pcm.size and np.all(np.isfinite(pcm)) and np.max(np.abs(pcm)) <= 1.001


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_fail_with_audio_error(data):
    try:
        audio = load_audio(data, max_seconds=5.0, max_bytes=4096)
    except AudioError as error:
        assert str(error)
        return
    assert audio.dtype == np.float32 and 0 < audio.size <= 5 * 16000 * 1.01


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=OPTIONS, seconds=st.floats(0.0, 2.0), scale=st.sampled_from([0.0, 0.1, 1.0, 5.0]))
def test_the_live_server_answers_or_refuses_never_faults(grpc_client, options, seconds, scale):
    from tritonclient.utils import InferenceServerException

    from tests.test_serving import infer
    from whisper_triton import contract

    audio = (np.sin(np.arange(int(seconds * 16000)) / 7.0) * scale).astype(np.float32)
    try:
        infer(grpc_client, audio, options)
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error
    assert grpc_client.is_model_ready(contract.ENSEMBLE_MODEL)
