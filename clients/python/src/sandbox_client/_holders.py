"""The state the sync and async claim and batch objects hold.

Owns what does not depend on blocking or asyncio I/O: a claim's facts, the
API it was made through, its uid, whether it is deleted on exit and whether it owns
(and so must close) its client; a batch's claims, failures and concurrency,
and its sequence protocol. The I/O methods (delete, close, context
managers) live in each client. Guarantee: both clients hold the same
fields under the same names.
"""

from __future__ import annotations

from typing import Generic, Iterator, List, Optional, TypeVar

from . import errors
from .status import SandboxFacts, SandboxInfo

Api = TypeVar("Api")
Claim = TypeVar("Claim")


class ClaimHolder(SandboxFacts, Generic[Api]):
    """A Ready claim made through an ``Api`` (sync or async)."""

    def __init__(
        self,
        info: SandboxInfo,
        api: Api,
        *,
        delete_on_exit: bool = True,
        owns_client: bool = False,
        uid: Optional[str] = None,
    ) -> None:
        self.info = info
        #: The claim's uid from the create's answer: deletes are conditioned
        #: on it, so a claim recreated under the same name is never deleted.
        self.uid = uid
        self._api = api
        self.delete_on_exit = delete_on_exit
        self._owns_client = owns_client
        self._deleted = False


class BatchHolder(Generic[Claim, Api]):
    """The Ready claims of one ``create_many`` and the failed ones."""

    def __init__(
        self,
        claims: List[Claim],
        failures: List[errors.SandboxError],
        api: Api,
        concurrency: int,
        delete_on_exit: bool,
        owns_client: bool,
    ) -> None:
        self.claims = claims
        self.errors = failures
        self._api = api
        self._concurrency = concurrency
        self.delete_on_exit = delete_on_exit
        self._owns_client = owns_client

    def __iter__(self) -> Iterator[Claim]:
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)

    def __getitem__(self, index: int) -> Claim:
        return self.claims[index]
