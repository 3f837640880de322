"""The one exception type the user ever sees: a message that names the problem and the fix."""


class UserError(Exception):
    """A mistake in the input (data, checkpoint, override) that ends the run with one line."""


class WeightsUnavailable(UserError):
    """Pretrained weights that cannot be had here (not cached and not downloadable): analysis
    skips what needs them; training stops. Weights that are there but wrong are a UserError."""
