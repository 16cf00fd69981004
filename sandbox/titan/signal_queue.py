"""The shared JetStream work queue of strategy signals, as titan-execution consumes it.

Every engine pulls from one durable consumer, so each signal is handled by exactly one engine.
Runbooks reset execution state by deleting that consumer: the queue re-creates it, whether the
engine is restarting or still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import common
import nats.js.api
import nats.js.errors

CONSUMER = "execution_group"
CHECK_EVERY_S = 5.0  # a deleted consumer looks like an idle one: ask the server now and then


class SignalQueue:
    def __init__(self, js, log: common.Log):
        self.js, self.log = js, log

    async def batches(self) -> AsyncIterator[list]:
        """Yield batches of signal messages forever, riding out NATS and consumer outages."""
        sub, last_check = None, time.monotonic()
        while True:
            try:
                if sub is None:
                    sub = await self.bind()
                msgs = await sub.fetch(10, timeout=1)
            except TimeoutError:  # nats.errors.TimeoutError included: nothing to do
                if time.monotonic() - last_check > CHECK_EVERY_S:
                    last_check = time.monotonic()
                    if not await self.consumer_exists():
                        self.log.warn(f"JetStream consumer {CONSUMER} vanished; re-creating")
                        sub = await self.drop(sub)
                continue
            except Exception as exc:  # noqa: BLE001 - consumer deleted, NATS or JetStream down
                self.log.warn(f"Signal pull failed ({exc.__class__.__name__}); re-binding consumer")
                sub = await self.drop(sub)
                await asyncio.sleep(1)
                continue
            yield msgs

    async def bind(self):
        await common.ensure_exec_stream(self.js)
        if not await self.consumer_exists():
            await self.js.add_consumer(common.EXEC_STREAM, nats.js.api.ConsumerConfig(
                durable_name=CONSUMER, ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                deliver_policy=nats.js.api.DeliverPolicy.ALL,
                filter_subject=common.EXEC_SIGNAL_SUBJECT, ack_wait=30))
            self.log.info(f"Created JetStream consumer {CONSUMER} on {common.EXEC_STREAM}")
        return await self.js.pull_subscribe_bind(CONSUMER, common.EXEC_STREAM)

    async def consumer_exists(self) -> bool:
        """False only when the server says it is gone (an outage shows up in fetch instead)."""
        try:
            await self.js.consumer_info(common.EXEC_STREAM, CONSUMER)
        except nats.js.errors.NotFoundError:
            return False
        except Exception:  # noqa: BLE001 - NATS down: not a verdict on the consumer
            pass
        return True

    @staticmethod
    async def drop(sub) -> None:
        if sub is not None:
            with contextlib.suppress(Exception):  # already gone with its consumer or connection
                await sub.unsubscribe()
