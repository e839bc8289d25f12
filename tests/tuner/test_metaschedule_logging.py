"""MetaSchedule's loggers can be made again in a process whose MetaSchedule logger carries an
unnamed handler, as pytest 9's capture handlers are."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

from tunefarm.tuner.metaschedule_logging import METASCHEDULE_LOGGER, unnamed_handlers_set_aside


@pytest.fixture
def unnamed_handler() -> Iterator[logging.Handler]:
    ms_logger = logging.getLogger(METASCHEDULE_LOGGER)
    handler = logging.NullHandler()
    ms_logger.addHandler(handler)
    yield handler
    ms_logger.removeHandler(handler)


def test_metaschedule_alone_fails_on_an_unnamed_handler(
    unnamed_handler: logging.Handler, tmp_path: Path
) -> None:
    """Why the guard exists: if TVM ever fixes this, the guard can go."""
    with pytest.raises(AttributeError):
        get_loggers_from_work_dir(str(tmp_path), ["task"])


def test_loggers_are_made_twice_and_the_handler_is_put_back(
    unnamed_handler: logging.Handler, tmp_path: Path
) -> None:
    for attempt in range(2):
        with unnamed_handlers_set_aside():
            loggers = get_loggers_from_work_dir(str(tmp_path / str(attempt)), ["task"])
        assert len(loggers) == 1
        assert unnamed_handler in logging.getLogger(METASCHEDULE_LOGGER).handlers
