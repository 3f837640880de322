"""How a run stops: the one exception type the user ever sees (a message that names the problem
and the fix), and Ctrl-C as a KeyboardInterrupt that says where the run stopped."""

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A mistake in the input (data, checkpoint, override) that ends the run with one line."""


class WeightsUnavailable(UserError):
    """Pretrained weights that cannot be had here (not cached and not downloadable): analysis
    skips what needs them; training stops. Weights that are there but wrong are a UserError."""


@contextmanager
def ctrl_c_interrupts(say: Callable[[], str] | None = None) -> Iterator[None]:
    """Lightning answers Ctrl-C with a graceful shutdown, then sys.exit(1) and SIGINT ignored
    from then on: that exit becomes a KeyboardInterrupt carrying say() (without `say`, none:
    finetune.tasks.run_task says which mode stopped; the command line prints it and exits 130,
    in a notebook it is the usual KeyboardInterrupt), and Ctrl-C works again (in a notebook,
    the next cell)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SystemExit as stop:
        if not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGINT, handler)
        raise KeyboardInterrupt(say() if say else "") from None
