"""MetaSchedule's loggers, made safe to create more than once in a process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

METASCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"


@contextmanager
def unnamed_handlers_set_aside() -> Iterator[None]:
    """Take the unnamed handlers off MetaSchedule's logger while it makes its loggers.

    MetaSchedule's ``create_loggers`` lists the names of its logger's handlers in a
    ``dictConfig`` and fails (``'NoneType' object has no attribute 'format'``) on a handler
    without a name. Such handlers are other code's: pytest 9 hangs its capture handlers on every
    non-propagating logger, and MetaSchedule's logger is one once it has been created. They are
    put back afterwards, since the ``dictConfig`` replaces the logger's handlers.
    """
    ms_logger = logging.getLogger(METASCHEDULE_LOGGER)
    unnamed = [handler for handler in ms_logger.handlers if handler.get_name() is None]
    for handler in unnamed:
        ms_logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            ms_logger.addHandler(handler)
