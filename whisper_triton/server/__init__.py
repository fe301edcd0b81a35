"""The local CPU Triton Inference Server: its runtime (:mod:`.runtime`), starting and stopping it
(:mod:`.launcher`), the processes and shared memory it leaves (:mod:`.processes`), and the
``whisper-triton serve`` command that supervises it (:mod:`.supervisor`).

Standard library only (the server itself comes from the ``nvidia-pytriton`` wheel that ``make setup``
installs); nothing here is copied into model repositories.
"""
