"""The one exception type the user ever sees: a message that names the problem and the fix."""


class UserError(Exception):
    """A mistake in the input (data, checkpoint, override) that ends the run with one line."""
