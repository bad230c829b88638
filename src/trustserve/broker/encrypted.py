"""Standard mode: every payload in the broker is ciphertext under the broker key.

The KMS releases the broker key only to attested frontends and workers. These
two decorators sit on the broker seam: ``EncryptingBroker`` (frontend side)
seals each job and opens each outcome; ``DecryptingJobSource`` (worker side)
does the reverse. AES-256-GCM with a random nonce per message; the job id,
queue, kind and direction are associated data, so a payload cannot be moved
to another job or turned into an answer.
"""

from __future__ import annotations

import os
from dataclasses import replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustserve.broker.base import Broker, Job, JobSource, Outcome
from trustserve.errors import CannotOpenSealed, TrustserveError

_IV = 12


def _aad(job_id: str, queue: str, direction: str) -> bytes:
    return f"trustserve-broker-v1|{direction}|{queue}|{job_id}".encode()


class PayloadCipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        iv = os.urandom(_IV)
        return iv + self._aead.encrypt(iv, data, aad)

    def open(self, data: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(data[:_IV], data[_IV:], aad)
        except (InvalidTag, ValueError):
            raise CannotOpenSealed() from None


class EncryptingBroker:
    def __init__(self, inner: Broker, key: bytes) -> None:
        self.inner = inner
        self.cipher = PayloadCipher(key)

    async def submit(self, job: Job) -> Outcome:
        aad = _aad(job.id, job.queue, "job") + job.kind.encode()
        sealed = replace(job, payload=self.cipher.seal(job.payload, aad))
        outcome = await self.inner.submit(sealed)
        if outcome.meta.get("broker") and outcome.status != 200:
            return outcome  # the broker's own failure notice: no worker data in it
        try:
            payload = self.cipher.open(outcome.payload, _aad(job.id, job.queue, "outcome"))
        except CannotOpenSealed:
            raise TrustserveError("an answer from the broker failed authentication") from None
        return replace(outcome, payload=payload)

    async def depth(self, queue: str) -> int:
        return await self.inner.depth(queue)

    async def consumers(self, queue: str) -> int:
        return await self.inner.consumers(queue)

    async def close(self) -> None:
        await self.inner.close()


class DecryptingJobSource:
    def __init__(self, inner: JobSource, key: bytes) -> None:
        self.inner = inner
        self.cipher = PayloadCipher(key)

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        jobs = await self.inner.take(queue, max_items, max_delay_s)
        opened = []
        for job in jobs:
            aad = _aad(job.id, job.queue, "job") + job.kind.encode()
            try:
                opened.append(replace(job, payload=self.cipher.open(job.payload, aad)))
            except CannotOpenSealed:
                await self.answer(job, Outcome(job.id, 400, b"cannot open broker payload"))
        return opened

    async def answer(self, job: Job, outcome: Outcome) -> None:
        aad = _aad(job.id, job.queue, "outcome")
        await self.inner.answer(
            job, replace(outcome, payload=self.cipher.seal(outcome.payload, aad))
        )

    async def close(self) -> None:
        await self.inner.close()
