"""Loop detection (RFC 3261 16.3 step 4): a true loop gets 482, a spiral passes."""

from __future__ import annotations

import asyncio

from actors import Runtime
from actors.sip.headers import new_branch, new_tag
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from nf_modules.ims_module import ImsModule

WAIT = 10.0


def options(me: int, uri: str) -> bytes:
    return bytes(SipMessage.request("OPTIONS", uri, [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{me};branch={new_branch()}"),
        ("From", f"<sip:probe@ims.example>;tag={new_tag()}"), ("To", f"<{uri}>"),
        ("Call-ID", new_tag()), ("CSeq", "1 OPTIONS"), ("Max-Forwards", "70"),
    ]))


async def test_two_modules_pointing_at_each_other_answer_482_not_483() -> None:
    async with Runtime.attach():
        a = ImsModule.start("a").proxy()
        b = ImsModule.start("b", downstream=await a.get_address()).proxy()
        await a.set_downstream(await b.get_address())
        inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, s: inbox.put_nowait(SipMessage.parse(d))) as ep:
            ep.send(options(ep.local_address[1], "sip:bob@ims.example"), await a.get_address())
            while (answer := await asyncio.wait_for(inbox.get(), WAIT)).status == 100:
                pass
        assert answer.status == 482  # found at the second visit, long before Max-Forwards runs out
        assert (await a.get_stats())["loops"] == 1
        assert (await b.get_stats()).get("loops", 0) == 0
