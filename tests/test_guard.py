"""The address a request is counted under (ddpm/app/guard.py): the peer's, or, behind N trusted proxies, the N-th
address from the right of X-Forwarded-For (a client can forge only the addresses to its left)."""
from types import SimpleNamespace

from ddpm.app.guard import address


def request(peer, forwarded=None):
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers={"x-forwarded-for": forwarded} if forwarded else {})


def test_the_peer_address_without_proxies():
    assert address(request("1.2.3.4", "6.6.6.6"), hops=0) == "1.2.3.4"
    assert address(SimpleNamespace(client=None, headers={}), hops=0) is None


def test_behind_one_proxy_the_last_forwarded_address_counts_and_a_forged_one_does_not():
    space_proxy = "10.16.3.80"
    assert address(request(space_proxy, "81.2.3.4"), hops=1) == "81.2.3.4"
    assert address(request(space_proxy, "6.6.6.6, 81.2.3.4"), hops=1) == "81.2.3.4"     # the client wrote 6.6.6.6
    assert address(request(space_proxy, "6.6.6.6, 81.2.3.4, 10.0.0.1"), hops=2) == "81.2.3.4"
    assert address(request(space_proxy), hops=1) == space_proxy                        # no header: the peer
