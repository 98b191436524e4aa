"""The networks this host's interfaces are on, for the IP allowlist's default
(`appliance.netpolicy.LocalNetwork`): a node on a field network numbered outside the private
ranges then syncs with its neighbours out of the box.

Read from the kernel over rtnetlink (an RTM_GETADDR dump: every address of every interface,
IPv4 and IPv6, with its prefix length), so no tool or extra package is needed. Where netlink is
not available (not Linux) or fails, there are no interface networks: the private ranges remain
the default, and the operator can `allow` the network."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterator

from appliance.netpolicy import LocalNetwork

log = logging.getLogger(__name__)

RTM_NEWADDR = 20
RTM_GETADDR = 22
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2  # on a point-to-point link IFA_ADDRESS is the far end; IFA_LOCAL is ours
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
RTATTR = struct.Struct("=HH")  # length, type
RECEIVE_BYTES = 65536
MAX_MESSAGES = 100_000  # bounds the dump: a host with more addresses than this is not a LAN appliance


def interface_networks() -> tuple[LocalNetwork, ...]:
    """The network of every address on this host's interfaces (loopback included), in the
    kernel's order, without repeats; empty where they cannot be read."""
    if not hasattr(socket, "AF_NETLINK"):
        return ()
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            sequence = int.from_bytes(os.urandom(4), "little")
            request = NLMSG_HEADER.pack(NLMSG_HEADER.size + IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            sock.send(request)
            found: dict[str, LocalNetwork] = {}
            for index, network in _dump(sock, sequence):
                if network not in found:
                    found[network] = LocalNetwork(network, _interface_name(index))
            return tuple(found.values())
    except (OSError, ValueError, struct.error) as exc:
        log.warning("cannot list this host's interface networks (%s): only the private ranges are allowed by default", exc)
        return ()


def _dump(sock: socket.socket, sequence: int) -> Iterator[tuple[int, str]]:
    """(interface index, network) for each address of the dump's answer."""
    for _ in range(MAX_MESSAGES):
        data = sock.recv(RECEIVE_BYTES)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _, seq, _ = NLMSG_HEADER.unpack_from(data, offset)
            if length < NLMSG_HEADER.size:
                raise ValueError("a netlink message shorter than its header")
            body = data[offset + NLMSG_HEADER.size : offset + length]
            offset += (length + 3) & ~3
            if seq != sequence:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
                raise OSError(-code, os.strerror(-code) if code else "netlink error")
            if kind == RTM_NEWADDR and len(body) >= IFADDRMSG.size:
                address = _address_network(body)
                if address is not None:
                    yield address
    raise ValueError("the netlink address dump did not end")


def _address_network(body: bytes) -> tuple[int, str] | None:
    family, prefix, _, _, index = IFADDRMSG.unpack_from(body)
    attributes: dict[int, bytes] = {}
    offset = IFADDRMSG.size
    while offset + RTATTR.size <= len(body):
        length, kind = RTATTR.unpack_from(body, offset)
        if length < RTATTR.size:
            break
        attributes[kind] = body[offset + RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    raw = attributes.get(IFA_LOCAL) or attributes.get(IFA_ADDRESS)
    if family == socket.AF_INET and raw is not None and len(raw) == 4:
        return index, str(ipaddress.IPv4Network((raw, prefix), strict=False))
    if family == socket.AF_INET6 and raw is not None and len(raw) == 16:
        return index, str(ipaddress.IPv6Network((raw, prefix), strict=False))
    return None


def _interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"#{index}"
