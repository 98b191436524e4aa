"""A node that has joined a workspace holds nothing but its directory until its first sync:
the workspace's channels arrive with it. Until then the console says so instead of inviting
the operator to create channels, which would make a second channel of a name that may exist
elsewhere already."""

from __future__ import annotations

from tui.services import IdentityService, PeersService

TITLE = "Waiting for the first sync (LAN peers or a courier stick)"
DETAIL = (
    "This node has joined the workspace and holds only its directory so far. The channels "
    "arrive with the first sync: a node of the workspace on this LAN, or a courier stick (F4). "
    "A channel created before then may duplicate one that exists elsewhere."
)
CONFIRM = "Create a channel before the first sync?"
CONFIRM_DETAIL = "The workspace's channels have not arrived yet: one of the same name may exist elsewhere, and there would then be two."


async def awaiting_first_sync(identity: IdentityService, peers: PeersService) -> bool:
    """True for a node that did not found its workspace and has never synced with a peer,
    neither over the LAN nor by an accepted bundle."""
    if identity.whoami().holds_workspace_key:
        return False  # the founding node: the workspace starts here
    return not any(peer.last_sync is not None or peer.last_courier is not None for peer in await peers.peer_overview())
