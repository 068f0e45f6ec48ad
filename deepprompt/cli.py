"""Entry-point glue: user errors become one line and exit code 2, on rank 0 only."""
from __future__ import annotations

import os
import sys

from deepprompt.errors import DeepPromptError

EXIT_USER_ERROR = 2


def run_user_errors(main) -> None:
    try:
        main()
    except DeepPromptError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"deepprompt: error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
