"""Vendor calls against tuned kernels, timed once per chain and target fingerprint (issue 17).

Choosing a chain's side builds it twice (the vendor call, the tuned kernel with its record) and
times both on the GPU: seconds per chain. A farm builds the same networks again and again, so
each timing is kept (``VendorTimingRow``) and read by the next build for the fingerprint, as a
tuning record is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine, select

from tunefarm.tuning_db.schema import Base, VendorTimingRow
from tunefarm.tuning_db.upsert import insert_ignoring_duplicates

_timings = Base.metadata.tables[VendorTimingRow.__tablename__]


@dataclass(frozen=True)
class VendorTimingKey:
    target_key: str
    """The target fingerprint's key; the target must be filed (``SqlDatabase`` files it)."""
    chain_json: str
    """The chain: the call's function, types and configuration (``VendorTimingRow``)."""
    side: str
    """``vendor`` or ``tuned``."""
    source_key: str
    """What was built (``VendorTimingRow.source_key``)."""

    @property
    def chain_key(self) -> str:
        return hashlib.sha256(self.chain_json.encode()).hexdigest()


def find_vendor_timing(engine: Engine, key: VendorTimingKey) -> float | None:
    """Seconds per call stored under ``key``, or None."""
    with engine.connect() as connection:
        seconds = connection.execute(
            select(_timings.c.seconds).where(
                _timings.c.target_key == key.target_key,
                _timings.c.chain_key == key.chain_key,
                _timings.c.side == key.side,
                _timings.c.source_key == key.source_key,
            )
        ).scalar_one_or_none()
    return float(seconds) if seconds is not None else None


def store_vendor_timing(
    engine: Engine, key: VendorTimingKey, seconds: float, *, measured_on: str
) -> None:
    """Keep ``seconds`` under ``key``; a timing another build stored first is kept."""
    with engine.begin() as connection:
        insert_ignoring_duplicates(
            connection,
            _timings,
            {
                "target_key": key.target_key,
                "chain_key": key.chain_key,
                "side": key.side,
                "source_key": key.source_key,
                "chain_json": key.chain_json,
                "seconds": seconds,
                "measured_on": measured_on[:255],
                "measured_at": datetime.now(timezone.utc),
            },
        )
