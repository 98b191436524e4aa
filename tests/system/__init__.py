"""System tier: real processes, sockets, network namespaces, the appliance image and Vagrant."""
