"""``python -m whisper_triton``: the same as the ``whisper-triton`` command."""

import sys

from whisper_triton.cli import main

sys.exit(main())
