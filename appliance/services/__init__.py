"""The node's services, one module each, in dependency order: roster, identity, heads,
replica, views, directory, blobs, chat, exchange, custody, intake, enrollment, peers, audit
(each receives the earlier ones it uses; `appliance.node.Node` assembles them)."""
