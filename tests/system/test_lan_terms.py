"""Terms of service over a LAN session (real loopback sockets): a version an admin publishes
reaches a member's node live and shuts its reading until the member accepts; the acceptance
comes back the same way, so the admin's node shows who accepted which version, when and where.
Terms a member signed, arriving over the LAN, are refused, audited and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import terms
from appliance.errors import NotFound, TermsNotAccepted
from tests.conftest import make_workspace, sync_all
from tests.flows.test_terms import forge_into_directory
from tests.system.test_lan import eventually, serving

pytestmark = pytest.mark.timeout(120)


async def test_terms_and_their_acceptance_travel_over_the_lan(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "before the terms")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)

            async def bob_reads() -> bool:
                try:
                    return "before the terms" in [m.text for m in await bravo.views.read("general", mark_read=False)]
                except NotFound:  # not arrived yet
                    return False

            await eventually(bob_reads, what="the first sync")
            await alpha.directory.terms.publish(1, "Field rules", "Be kind.")

            async def pending() -> bool:
                return bravo.directory.terms.pending() is not None

            await eventually(pending, what="the terms to reach bravo")
            with pytest.raises(TermsNotAccepted, match="rallypoint terms accept"):
                await bravo.views.read("general")
            await bravo.directory.terms.accept(1)

            async def accepted() -> bool:
                return any(s.user == "bob" and s.current for s in await alpha.directory.terms.status())

            await eventually(accepted, what="bob's acceptance to reach alpha")
        bob = next(s for s in await alpha.directory.terms.status() if s.user == "bob")
        assert (bob.accepted_version, bob.node_id) == (1, bravo.identity.node_id)


async def test_terms_signed_by_a_member_over_the_lan_are_refused_and_change_nothing(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await sync_all(alpha, bravo)
        bob_key = bravo.identity.keys.users[bravo.identity.user_key]
        forged = terms.publish_terms(bob_key, workspace=bravo.identity.workspace_key, version=7, title="Bob rules", text="obey bob", published_at=1)
        await forge_into_directory(bravo, forged.key, forged.encoded)

        async def refused() -> list[str]:
            return [str(e.detail) for e in await alpha.audit.entries() if "signed by bob, who is not an admin" in str(e.detail)]

        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await eventually(refused, what="alpha to refuse and audit bob's terms")
        assert alpha.directory.terms.current() is None
        await alpha.chat.create_channel("still-free")
