"""What crosses between nodes, the middle layer: courier bundles on a USB stick and live sync
on a LAN.

sync states what it needs of the node and of the world as ports (`sync/ports.py`: the replica,
the LAN book, a frame channel, a peer finder, the medium) and runs its logic - the LAN session,
the courier's import and export, the delta packer both share - against them. Each port has a
real implementation (over the node's services, sockets and the wire codec, mDNS, the stick's
file system) and an in-memory twin shipped beside it; tests/contracts/ runs one suite on both.
Also here: the bundle format and its codec, the stick's layout, the LAN wire codec, the
handshake gate and the refusal log.

Imports appliance's public modules only (never `appliance.node` or a private module) and
nothing from `tui`. Its errors derive from `SyncError`, under `RallypointError`
(sync/errors.py)."""
