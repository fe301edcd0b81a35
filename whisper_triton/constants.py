"""Audio and feature constants of Whisper: the one place they are written down.

Models can override the mel parameters through their ``preprocessor_config.json``; these are the values
every released Whisper checkpoint uses (large-v3 differs only in ``N_MELS = 128``).
"""

SAMPLE_RATE = 16000  # Hz; every Whisper model is trained on 16 kHz mono audio
N_FFT = 400  # samples in one STFT window: 25 ms at 16 kHz
HOP_LENGTH = 160  # samples between STFT frames: 10 ms at 16 kHz, so 100 frames per second
N_MELS = 80  # mel bins of every Whisper model except large-v3 (128)
CHUNK_LENGTH = 30  # seconds of audio in one encoder window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30-second chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30-second chunk (the encoder's input length)
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's stride-2 conv halves the frame rate: 20 ms per position
TIME_PRECISION = N_SAMPLES_PER_TOKEN / SAMPLE_RATE  # 0.02 s between timestamp tokens
