"""Sending one email through an SMTP server named by a URL: smtp://[USER:PASSWORD@]HOST[:PORT]
(STARTTLS when the server offers it) or smtps://... (TLS from the start)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

TIMEOUT_SECONDS = 30


def send(url: str, message: EmailMessage) -> None:
    """Hand the message to the server; raises (smtplib.SMTPException, OSError) when it is not accepted."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if parts.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, parts.port or 465, timeout=TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=TIMEOUT_SECONDS)
    with client:
        client.ehlo()
        if parts.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)
