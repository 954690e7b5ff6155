"""Pure venue codecs: one module per exchange, bytes in, typed records out.

No module here imports trio or reads a clock; receive time is an argument. A malformed
frame raises :class:`actors.venues.base.FrameError`; anything else escaping is a bug.
"""
