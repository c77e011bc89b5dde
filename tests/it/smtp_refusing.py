"""An aiosmtpd handler for kaudit's tests: a Mailbox that refuses every
recipient whose address starts with "nobody" (550), and records the
envelope's recipients in an X-Rcpt-To header of each stored mail."""

from aiosmtpd.handlers import Mailbox


class Refusing(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody"):
            return "550 5.1.1 <%s>: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        rcpt = ",".join(envelope.rcpt_tos).encode()
        envelope.content = b"X-Rcpt-To: " + rcpt + b"\r\n" + envelope.content
        return await super().handle_DATA(server, session, envelope)
