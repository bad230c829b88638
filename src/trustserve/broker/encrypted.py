"""Standard mode: every payload in the broker is ciphertext under the broker key, and
everything the frontend acts on in an answer is authenticated.

The KMS releases the broker key only to attested frontends and workers. These
two decorators sit on the broker seam: ``EncryptingBroker`` (frontend side)
seals each job and opens each outcome; ``DecryptingJobSource`` (worker side)
does the reverse. AES-256-GCM with a random nonce per message.

- A job's associated data is its direction, queue, id, kind and ``JobMeta``: the
  broker can neither move a payload to another job nor change how a worker reads it
  (a worker answers such a job 502 ``broker_tampered``).
- A sealed (or OHTTP) job's payload is already sealed to the worker (HPKE, crypto/sealing.py), so
  it is not encrypted a second time: it travels as ``iv | tag | sealed request``, the
  tag a GMAC under the broker key over the same associated data (labelled ``bound``,
  not ``job``) and every byte of the sealed request. Moving it to another job,
  changing its kind, queue or ``JobMeta``, or any byte of it, fails that check: the
  worker answers 502 ``broker_tampered`` without opening (or spending) the request.
  A v2 or torchserve job relabelled ``sealed`` (or the reverse) fails it too.
- An outcome is sealed whole: the worker seals ``frame(id, status, OutcomeMeta,
  payload)``; in the clear the broker sees only a copy of the status (for its own
  bookkeeping) and no metadata. The frontend acts only on what it opened and
  refuses, with ``BrokerTampered`` (502), an outcome that fails to open, whose
  clear status differs from the sealed one, or that carries clear metadata. So a
  broker cannot inject an error, flip a status or change ``header_length``.
- The one clear outcome the frontend takes is the broker's own failure notice
  (``broker_failure``: every worker that took the job died). It is replaced by
  the fixed notice, so all it can ever say is "failed".
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import replace

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import (
    AEADDecryptionContext,
    AEADEncryptionContext,
    Cipher,
    algorithms,
    modes,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustserve.broker.base import (
    Broker,
    Job,
    JobSource,
    Outcome,
    OutcomeMeta,
    broker_failure,
)
from trustserve.broker.wire import frame, outcome_from, outcome_meta, unframe
from trustserve.errors import BrokerTampered, CannotOpenSealed

log = logging.getLogger(__name__)
_IV = 12
_TAG = 16
_LEN = struct.Struct(">I")


def _aad(job_id: str, queue: str, direction: str) -> bytes:
    return f"trustserve-broker-v2|{direction}|{queue}|{job_id}".encode()


def _job_aad(job: Job, direction: str = "job") -> bytes:
    meta = orjson.dumps(job.meta.to_json(), option=orjson.OPT_SORT_KEYS)
    return _aad(job.id, job.queue, direction) + b"|" + job.kind.value.encode() + b"|" + meta


class PayloadCipher:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead = AESGCM(key)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        iv = os.urandom(_IV)
        return iv + self._aead.encrypt(iv, data, aad)

    def open(self, data: bytes, aad: bytes) -> bytes:
        view = memoryview(data)  # no copy of the ciphertext to split off the nonce
        try:
            return self._aead.decrypt(view[:_IV], view[_IV:], aad)
        except (InvalidTag, ValueError):
            raise CannotOpenSealed() from None

    def bind(self, data: bytes, aad: bytes) -> bytes:
        """``iv | tag | data``: ``data`` authenticated with ``aad``, not encrypted."""
        iv = os.urandom(_IV)
        mac = Cipher(algorithms.AES(self._key), modes.GCM(iv)).encryptor()
        self._authenticate(mac, data, aad)
        mac.finalize()
        return b"".join((iv, mac.tag, data))

    def unbind(self, bound: bytes, aad: bytes) -> bytes:
        """``data`` from ``bind``'s output if it was bound with ``aad``; else CannotOpenSealed."""
        if len(bound) < _IV + _TAG:
            raise CannotOpenSealed()
        view = memoryview(bound)
        data = view[_IV + _TAG :]
        check = Cipher(
            algorithms.AES(self._key), modes.GCM(bytes(view[:_IV]), bytes(view[_IV : _IV + _TAG]))
        ).decryptor()
        self._authenticate(check, data, aad)
        try:
            check.finalize()
        except InvalidTag:
            raise CannotOpenSealed() from None
        return bytes(data)

    @staticmethod
    def _authenticate(
        ctx: AEADEncryptionContext | AEADDecryptionContext, data: bytes | memoryview, aad: bytes
    ) -> None:
        """GMAC input: ``len(aad) | aad | data``; the length keeps the split unambiguous."""
        ctx.authenticate_additional_data(_LEN.pack(len(aad)) + aad)
        ctx.authenticate_additional_data(data)


class EncryptingBroker:
    def __init__(self, inner: Broker, key: bytes) -> None:
        self.inner = inner
        self.cipher = PayloadCipher(key)

    async def submit(self, job: Job) -> Outcome:
        if job.kind.end_to_end:  # sealed to the worker already: bound, not encrypted
            payload = self.cipher.bind(job.payload, _job_aad(job, "bound"))
        else:
            payload = self.cipher.seal(job.payload, _job_aad(job))
        outcome = await self.inner.submit(replace(job, payload=payload))
        if outcome.by_broker:
            return broker_failure(job.id)
        return self.open(job, outcome)

    def open(self, job: Job, outcome: Outcome) -> Outcome:
        """The worker's outcome as it sealed it; BrokerTampered if anything was changed."""
        try:
            plain = self.cipher.open(outcome.payload, _aad(job.id, job.queue, "outcome"))
            head, payload = unframe(plain)
            inner = outcome_from(head, payload)
        except (CannotOpenSealed, ValueError):
            log.warning("an answer for job %s failed authentication", job.id)
            raise BrokerTampered("an answer from the broker failed authentication") from None
        if inner.id != job.id or inner.status != outcome.status or outcome.meta != OutcomeMeta():
            log.warning("the broker changed the status or metadata of job %s's answer", job.id)
            raise BrokerTampered("the broker changed the status or metadata of an answer")
        return inner

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
            try:
                if job.kind.end_to_end:
                    payload = self.cipher.unbind(job.payload, _job_aad(job, "bound"))
                else:
                    payload = self.cipher.open(job.payload, _job_aad(job))
                opened.append(replace(job, payload=payload))
            except CannotOpenSealed:
                log.warning("job %s from the broker failed authentication", job.id)
                refused = BrokerTampered("a job from the broker failed authentication")
                await self.answer(
                    job,
                    Outcome(
                        job.id, refused.status, str(refused).encode(), OutcomeMeta(refused.code)
                    ),
                )
        return opened

    async def answer(self, job: Job, outcome: Outcome) -> None:
        sealed = self.cipher.seal(
            frame(outcome_meta(outcome), outcome.payload), _aad(job.id, job.queue, "outcome")
        )
        await self.inner.answer(job, Outcome(outcome.id, outcome.status, sealed))

    async def close(self) -> None:
        await self.inner.close()
