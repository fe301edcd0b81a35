"""Shared core of whisper-triton: audio I/O, log-mel features, text normalisation, the test corpus.

Everything here is used by more than one of ``training/``, ``build/``, ``client/`` and the Triton models
in ``model_repository/``, so it lives in one installed package instead of being copied into each.
Nothing here imports torch, tritonclient or triton_python_backend_utils.
"""
