"""Everything that crosses a boundary between nodes: the bundle format, sneakernet (USB)
import/export, mDNS discovery and the LAN session protocol. Built on the node's verification
path (`appliance.node.Node.import_changes` / `changes_for`)."""
