"""Triton model `whisper_stream`: live transcription of audio streams under Triton's sequence batcher.

Each chunk joins its stream's buffer (``whisper_triton.streaming``); the buffer is decoded again by the
`whisper_encoder` and `whisper_decoder` models through BLS, every stream of this execution at once, so
concurrent streams share those models' dynamic batches; LocalAgreement-2 commits the words that two
consecutive hypotheses agree on. One response per chunk: committed words, the tentative tail, segment
times, and on the END chunk the whole transcript.

``execute`` is a coroutine so that the BLS calls of all streams are in flight together; for a model that
is not decoupled, Triton runs one execution at a time, so a stream's chunks are handled in order.
"""

import asyncio
import json
import pathlib

# Before numpy and whisper_triton: the bundled code, then PYTHONPATH, first on sys.path.
import _whisper_triton_paths  # noqa: F401
import numpy as np
import triton_python_backend_utils as pb_utils

import whisper_triton
from whisper_triton import contract
from whisper_triton.errors import ClientError
from whisper_triton.manifest import TOKENIZER_FILE, ModelManifest
from whisper_triton.native import return_large_blocks_at_once
from whisper_triton.serving import RequestError, check_for_model, error_response, request_options
from whisper_triton.streaming import StreamLimitError, StreamRegistry, Update, check_chunk, stream_options
from whisper_triton.tokenizer import TextTokenizer
from whisper_triton.transcriber import prepare_windows
from whisper_triton.vad import MODEL_FILE as VAD_FILE
from whisper_triton.vad import SileroVad


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
        return_large_blocks_at_once()
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        batching = config.get("sequence_batching") or {}
        if "oldest" not in batching:
            raise pb_utils.TritonModelException(
                "whisper_stream needs the sequence batcher's Oldest strategy (regenerate its config with "
                "whisper-triton build)"
            )
        # Triton drops a sequence after this idle time; the streams' own state goes with it.
        idle_seconds = int(batching["max_sequence_idle_microseconds"]) / 1e6
        directory = pathlib.Path(__file__).parent
        self.manifest = ModelManifest.load(directory)
        self.tokenizer = TextTokenizer(directory / TOKENIZER_FILE)
        self.vad = SileroVad(directory / VAD_FILE) if (directory / VAD_FILE).is_file() else None
        self.encoder_input, self.encoder_output = parameters["encoder_input"], parameters["encoder_output"]
        self.streams = StreamRegistry(
            int(parameters["max_streams"]), idle_seconds, float(parameters["trim_seconds"])
        )

    async def execute(self, requests):
        # A stream with a chunk here is alive, however long that chunk waited in Triton's queue.
        dropped = self.streams.sweep(keep={request.correlation_id() for request in requests})
        if dropped:
            pb_utils.Logger.log_info(
                f"whisper_stream: freed {len(dropped)} stream(s) idle for over {self.streams.idle_seconds:g} s"
            )
        responses = [None] * len(requests)
        accepted = {}  # stream id -> [(request index, words committed to make room, END)], in order
        for index, request in enumerate(requests):
            try:
                key, forced, end = self._accept(request)
            except StreamLimitError as exc:
                pb_utils.Logger.log_warn(f"whisper_stream: {exc}")
                responses[index] = _error(str(exc), pb_utils.TritonError.UNAVAILABLE)
                continue
            except Exception as exc:  # noqa: BLE001 - the client's mistake (a ClientError), or ours: logged
                responses[index] = error_response(pb_utils, contract.STREAM_MODEL, exc)
                continue
            if key is not None:
                accepted.setdefault(key, []).append((index, forced, end))
        keys = [key for key in accepted if self.streams.streams[key].pending]
        results = await self._decode([self.streams.streams[key] for key in keys])
        decoded = dict(zip(keys, results, strict=True))
        for key, entries in accepted.items():
            stream = self.streams.streams[key]
            # Triton's Oldest strategy hands over one chunk of a stream at a time; should several come in
            # one execution, they are answered without a decode of their own (the last one's covers them).
            for index, forced, _ in entries[:-1]:
                responses[index] = _response(Update(forced, list(stream.agreement.tentative)))
            index, forced, end = entries[-1]
            result = decoded.get(key)
            if isinstance(result, BaseException):
                responses[index] = _failure(result)
                continue
            committed = forced + (stream.update(*result) if result is not None else [])
            text = ""
            if end:
                committed += stream.finish()
                text = stream.text
                self.streams.end(key)
            responses[index] = _response(Update(committed, list(stream.agreement.tentative)), text)
            self.streams.touch(key)
        return responses

    def _accept(self, request):
        """(stream id, words committed to make room, END) of a valid chunk, its audio appended."""
        start, end, ready = (_flag(request, name) for name in _CONTROLS)
        if not ready:  # Triton marks empty batch slots so; a Python model is not sent them
            return None, [], False
        key = request.correlation_id()
        chunk = check_chunk(pb_utils.get_input_tensor_by_name(request, contract.AUDIO).as_numpy())
        options_tensor = pb_utils.get_input_tensor_by_name(request, contract.OPTIONS)
        if start:
            options = stream_options(
                request_options(None if options_tensor is None else options_tensor.as_numpy())
            )
            check_for_model(options, self.manifest, self.tokenizer, self.vad is not None)
            stream = self.streams.start(key, options)
        else:
            if options_tensor is not None:
                raise RequestError("OPTIONS go with a stream's first chunk (the one flagged START) only")
            stream = self.streams.get(key)
        return key, stream.append(chunk), end

    async def _decode(self, streams):
        """(segments, speech) of each stream's whole buffer, or the exception that stopped it."""
        results = [None] * len(streams)
        prepared = {}
        for i, stream in enumerate(streams):
            if stream.audio.size == 0:
                continue
            try:
                # One VAD pass serves the windowing and, after decoding, the choice of where to cut.
                probabilities = None if self.vad is None else self.vad.probabilities(stream.audio)
                vad = None if probabilities is None else _Computed(probabilities)
                features, windows = prepare_windows(stream.audio, self.manifest.n_mels, stream.options, vad)
            except Exception as exc:  # noqa: BLE001 - reported for this stream only
                results[i] = exc
                continue
            if windows.has_speech.any():
                prepared[i] = (features, windows.to_array(), stream.options.to_json(), probabilities)
            else:
                results[i] = ([], False, probabilities)  # VAD hears no speech: nothing to decode
        order = list(prepared)
        # All encoder calls in flight together, then all decoder calls: the dynamic batchers group them.
        states = await asyncio.gather(*(self._encode(prepared[i][0]) for i in order), return_exceptions=True)
        decodes = [
            self._decode_window(state, *prepared[i][:3])
            for i, state in zip(order, states, strict=True)
            if not isinstance(state, BaseException)
        ]
        segments = iter(await asyncio.gather(*decodes, return_exceptions=True))
        for i, state in zip(order, states, strict=True):
            outcome = state if isinstance(state, BaseException) else next(segments)
            results[i] = outcome if isinstance(outcome, BaseException) else (outcome, True, prepared[i][3])
        return results

    async def _encode(self, features):
        batch = np.ascontiguousarray(features[None], np.float32)
        (states,) = await _infer(
            contract.ENCODER_MODEL, [pb_utils.Tensor(self.encoder_input, batch)], [self.encoder_output]
        )
        return states

    async def _decode_window(self, states, features, windows, options_json):
        inputs = [
            pb_utils.Tensor(contract.ENCODER_OUTPUT, np.ascontiguousarray(states, np.float32)),
            pb_utils.Tensor(contract.INPUT_FEATURES, np.ascontiguousarray(features[None], np.float32)),
            pb_utils.Tensor(contract.WINDOWS, np.ascontiguousarray(windows[None], np.float32)),
            pb_utils.Tensor(contract.DECODE_OPTIONS, np.array([[options_json.encode()]], dtype=object)),
        ]
        (segments,) = await _infer(contract.DECODER_MODEL, inputs, [contract.SEGMENTS])
        return json.loads(segments.reshape(-1)[0].decode())


_CONTROLS = (contract.SEQUENCE_START, contract.SEQUENCE_END, contract.SEQUENCE_READY)


class _Computed:
    """Speech probabilities already computed, in the shape of the VAD that prepare_windows calls."""

    def __init__(self, probabilities):
        self._probabilities = probabilities

    def probabilities(self, audio):
        return self._probabilities


def _flag(request, name) -> bool:
    return bool(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])


async def _infer(model, inputs, outputs):
    response = await pb_utils.InferenceRequest(
        model_name=model, requested_output_names=outputs, inputs=inputs
    ).async_exec()
    if response.has_error():
        error = response.error()
        if error.code() == pb_utils.TritonError.INVALID_ARG:
            raise ClientError(error.message())
        raise RuntimeError(f"{model}: {error.message()}")
    return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]


def _text(name, value: str):
    return pb_utils.Tensor(name, np.array([[value.encode()]], dtype=object))


def _response(update: Update, text: str = ""):
    return pb_utils.InferenceResponse(
        [
            _text(contract.COMMITTED, update.committed_text),
            _text(contract.TENTATIVE, update.tentative_text),
            _text(contract.SEGMENTS, json.dumps(update.segments())),
            _text(contract.TEXT, text),
        ]
    )


def _error(message, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _failure(exc):
    return error_response(pb_utils, contract.STREAM_MODEL, exc)
