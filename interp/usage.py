"""How a binary reports a user's mistake: one line, not a traceback or a dump of every flag.

  user error   a mistake in the flags or the files they name (a bad value, a mesh that does not
               fit, a run folder of another run, a damaged record, a run that diverged): raised by
               this project's own code as a ValueError (or FileNotFoundError, FloatingPointError,
               absl's UsageError) whose message names the flag or file. A binary started with
               `run` prints it as one line, `<binary>: error: <message> (flags: --helpfull)`, and
               exits with status 1.
  unexpected   anything else, and the same types raised inside a library such as JAX: the
               traceback is the useful part, so it is kept.

INTERP_TRACEBACK=1 keeps the traceback of user errors too. A bottom-layer module (absl only), so
the launchers use it without importing JAX.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from absl import app

# Errors a user can fix from the message alone, when this project's own code raised them.
USER_ERRORS = (ValueError, FloatingPointError, FileNotFoundError, NotADirectoryError,
               IsADirectoryError, PermissionError, FileExistsError)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROJECT_DIRS = tuple(os.path.join(_ROOT, d) + os.sep for d in ("interp", "experiments", "launch"))


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is a user error (see the module docstring).

  Args:
    error: the exception a binary's main raised.
  Returns:
    True for absl's UsageError, and for one of `USER_ERRORS` raised by a line of this project.
  """
  if isinstance(error, app.UsageError):
    return True
  if not isinstance(error, USER_ERRORS):
    return False
  tb = error.__traceback__
  if tb is None:
    return True
  while tb.tb_next is not None:
    tb = tb.tb_next
  return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PROJECT_DIRS)


def one_line(error: BaseException) -> str:
  """The message of `error` with its line breaks and runs of spaces folded into single spaces."""
  return " ".join(str(error).split()) or type(error).__name__


def run(main: Callable) -> None:
  """`absl.app.run(main)`, with user errors printed as one line (see the module docstring).

  Args:
    main: the binary's main(argv).
  """
  program = os.path.basename(sys.argv[0])

  @functools.wraps(main)
  def guarded(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if os.environ.get("INTERP_TRACEBACK") or not is_user_error(e):
        raise
      sys.stderr.write(f"{program}: error: {one_line(e)} (flags: {program} --helpfull)\n")
      sys.stderr.flush()
      sys.exit(1)

  app.run(guarded)
