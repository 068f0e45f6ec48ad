"""Entry-point glue: user errors become one line and exit code 2 on every rank; any other failure
names the rank and host that failed (and, when a collective broke, the ranks that are gone)."""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
import warnings

from deepprompt.errors import DeepPromptError

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1

# what gloo's RuntimeErrors say: most carry their source path, a pair closed on timeout does not
GLOO_PEER_ERRORS = ("gloo/", "Application timeout caused pair closure", "Connection closed by peer",
                    "Connection reset by peer", "Timed out waiting")


def is_peer_loss(e: BaseException) -> bool:
    """A collective failed because another rank went away or stopped answering: torch's Dist*Error
    types, or the RuntimeError gloo raises (connection reset/closed by peer, timed out waiting)."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"}) or (
        isinstance(e, RuntimeError) and any(m in str(e) for m in GLOO_PEER_ERRORS))


def run_user_errors(main) -> None:
    try:
        main()
    except DeepPromptError as e:
        # every rank raises the same error (the preflight sees to that): print it once per node
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"deepprompt: error: {e}", file=sys.stderr, flush=True)
        _to_rank_log(logging.ERROR, f"error: {e}")
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:  # noqa: BLE001 - anything else: say who failed, then exit non-zero
        sys.stderr.write(failure_report(e))
        sys.stderr.flush()
        sys.exit(EXIT_FAILURE)


def _where() -> str:
    return f"rank {os.environ.get('RANK', '0')}@{socket.gethostname()}"


def failure_report(e: BaseException, wait_s: float = 2.0) -> str:
    """What goes to stderr when a rank fails: a traceback for a bug, one line when the failure is
    another rank going away (a dead or hung rank makes every survivor fail in its next collective).
    Either way the last line names this rank and host, and the traceback goes into the rank log."""
    text = f"{type(e).__name__}: {e}"
    _to_rank_log(logging.ERROR, f"failed: {text}", exc_info=(type(e), e, e.__traceback__))
    if not is_peer_loss(e):
        return "".join(traceback.format_exception(e)) + f"deepprompt: {_where()} failed: {_first_line(text)}\n"
    from deepprompt.engine import world

    gone, deadline = world.missing_peers(), time.time() + wait_s
    while not gone and time.time() < deadline:  # the peer's process may still be tearing down
        time.sleep(0.2)
        gone = world.missing_peers()
    line = f"deepprompt: {_where()} lost contact with other ranks: {_first_line(text)}"
    if gone:
        line += f" | gone: {', '.join(gone)}"
    _to_rank_log(logging.ERROR, line)
    return line + "\n"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line.split(" This is typically")[0][:400]  # gloo appends advice and an emoji


def _to_rank_log(level: int, message: str, exc_info=None) -> None:
    """Into this rank's own log file only (output_dir/logs/rank<r>.log, when set up)."""
    logger = logging.getLogger("deepprompt")
    record = logger.makeRecord(logger.name, level, __file__, 0, message, (), exc_info)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def setup_logging(rank: int, log_dir: str | os.PathLike | None = None) -> None:
    """Rank 0 logs INFO to the console, other ranks only warnings; with ``log_dir`` every rank also
    writes everything it logs to ``log_dir/rank<r>.log`` (host name included)."""
    # torch.distributed deprecation chatter from inside DeepSpeed, once per collective kind per rank
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()  # other libraries: warnings and errors only
    if not any(getattr(h, "_deepprompt", False) for h in root.handlers):
        other = logging.StreamHandler()
        other.setFormatter(fmt)
        other.addFilter(lambda record: not record.name.startswith("deepprompt"))  # ours print below
        other._deepprompt = True
        root.addHandler(other)
        root.setLevel(logging.WARNING)
    ours = logging.getLogger("deepprompt")
    ours.setLevel(logging.INFO)
    if not any(getattr(h, "_deepprompt", False) for h in ours.handlers):
        console = logging.StreamHandler()
        console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        console.setFormatter(fmt)
        console._deepprompt = True
        ours.addHandler(console)
    if log_dir is not None:
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.abspath(os.path.join(log_dir, f"rank{rank}.log"))
        if not any(getattr(h, "baseFilename", None) == path for h in ours.handlers):
            fh = logging.FileHandler(path)
            fh.setFormatter(logging.Formatter(
                f"%(asctime)s [rank{rank}@{socket.gethostname()}] %(levelname)s %(message)s"))
            ours.addHandler(fh)
    for noisy in ("DeepSpeed", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from deepspeed.utils import logger as ds_logger
        ds_logger.setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
