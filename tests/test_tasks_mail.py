"""E-mail as an attacker would use it (issue 9 item 7): recipients, allow-list, TLS and AUTH.

Every send goes to a real aiosmtpd server; TLS uses certificates of a throwaway CA (trustme)
made here, so nothing is mocked and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.mail_support import POLICY, Inbox, send_report, serving
from workloads.errors import PermanentTaskError
from workloads.recipients import RecipientPolicy, check_recipients, normalize_domain
from workloads.settings import TaskSettings
from workloads.smtp import SmtpSettings, SmtpTls

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "reports", "s3cret-pass"


def refused(addresses: list[str], policy: RecipientPolicy = POLICY) -> str:
    with pytest.raises(PermanentTaskError) as raised:
        check_recipients(addresses, policy)
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message, "one line"
    return message


# --- recipients --------------------------------------------------------------------------


def test_a_comma_makes_one_invalid_address_not_two() -> None:
    policy = RecipientPolicy(frozenset({"attacker.test", "example.org"}))
    assert refused(["x,evil@attacker.test"], policy) == (
        "1 of 1 recipients refused, nothing was sent: 'x,evil@attacker.test' is not a valid "
        "e-mail address: The email address contains invalid characters before the @-sign: ','."
    )


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.org\r\nBcc: eve@attacker.test",
        "ann@example.org\nbob@example.org",
        "ann@example.org, eve@attacker.test",
        "ann@example.org;eve@attacker.test",
        "Ann <ann@example.org>",
        '"eve,x"@example.org',
        "ann@[127.0.0.1]",
        "ann@",
        "@example.org",
        "",
    ],
)
def test_header_and_list_injection_is_refused(address: str) -> None:
    message = refused(["bob@example.org", address])
    assert message.startswith(f"1 of 2 recipients refused, nothing was sent: {address!r} is not")


def test_a_domain_not_on_the_allow_list_is_refused() -> None:
    assert refused(["ann@example.org", "eve@attacker.test"]) == (
        "1 of 2 recipients refused, nothing was sent: 'eve@attacker.test': the domain "
        "'attacker.test' is not allowed (allowed: example.org (SPECTASK_MAIL_ALLOWED_DOMAINS))"
    )
    assert "is not allowed" in refused(["ann@mail.example.org"]), "exact domains only"


def test_many_refusals_are_one_line_with_a_count() -> None:
    message = refused([f"u{i}@attacker.test" for i in range(8)])
    assert message.startswith("8 of 8 recipients refused, nothing was sent: 'u0@attacker.test'")
    assert "; and 3 more (allowed: example.org" in message


def test_too_many_recipients_are_refused_before_checking_each() -> None:
    many = [f"u{i}@example.org" for i in range(101)]
    assert refused(many) == (
        "the report names 101 recipients, more than the limit of 10 (SPECTASK_MAIL_MAX_RECIPIENTS)"
    )
    assert len(check_recipients(many[:10], POLICY)) == 10


def test_addresses_are_normalized_and_deduplicated() -> None:
    policy = RecipientPolicy(frozenset({"example.org", normalize_domain("Bücher.Example")}))
    assert check_recipients(
        ["Ann@Example.ORG", "Ann@example.org", "bob@bücher.example"], policy
    ) == ["Ann@example.org", "bob@xn--bcher-kva.example"]


def test_no_allow_list_refuses_everyone() -> None:
    assert refused(["ann@example.org"], RecipientPolicy()).endswith(
        "(no domain is allowed yet: set SPECTASK_MAIL_ALLOWED_DOMAINS=example.org,...)"
    )


def test_a_refused_recipient_sends_and_writes_nothing(tmp_path: Path) -> None:
    handler = Inbox()
    with serving(handler) as port, pytest.raises(PermanentTaskError, match="nothing was sent"):
        smtp = SmtpSettings(host="127.0.0.1", port=port, timeout=10)
        send_report(smtp, tmp_path, ["ann@example.org", "x,evil@attacker.test"])
    assert handler.messages == []
    assert list(tmp_path.iterdir()) == []


# --- settings ----------------------------------------------------------------------------


def test_allowed_domains_and_limits_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPECTASK_MAIL_ALLOWED_DOMAINS", " Example.ORG,example.test @bücher.example")
    monkeypatch.setenv("SPECTASK_MAIL_MAX_RECIPIENTS", "3")
    policy = TaskSettings().recipient_policy()
    assert policy == RecipientPolicy(
        frozenset({"example.org", "example.test", "xn--bcher-kva.example"}), 3
    )
    assert TaskSettings(_env_file=None).mail_allowed_domains == policy.allowed_domains


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("SPECTASK_MAIL_ALLOWED_DOMAINS", "example.org,not a domain", "is not a mail domain"),
        ("SPECTASK_MAIL_MAX_RECIPIENTS", "0", "greater than or equal to 1"),
        ("SPECTASK_SMTP_TLS", "ssl", "'none', 'starttls' or 'tls'"),
        ("SPECTASK_SMTP_FROM", "a@b.org\r\nBcc: eve@attacker.test", "should match pattern"),
        ("SPECTASK_SMTP_USER", "reports", "SPECTASK_SMTP_TLS=none: the password would cross"),
    ],
)
def test_bad_mail_settings_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, why: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(pydantic.ValidationError, match=why):
        TaskSettings()


def test_the_password_stays_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECTASK_SMTP_TLS", "starttls")
    monkeypatch.setenv("SPECTASK_SMTP_USER", USER)
    monkeypatch.setenv("SPECTASK_SMTP_PASSWORD", PASSWORD)
    settings = TaskSettings()
    smtp = settings.smtp_settings()
    assert (smtp.tls, smtp.username, smtp.password) == (SmtpTls.STARTTLS, USER, PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in repr(smtp)


# --- TLS and AUTH on a real server -------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535 itself


@pytest.fixture
def starttls_server(server_tls: ssl.SSLContext) -> Iterator[tuple[Inbox, int]]:
    """A submission server: STARTTLS before anything, then a login, then mail."""
    handler = Inbox()
    with serving(
        handler,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    ) as port:
        yield handler, port


def smtp_settings(port: int, **options: Any) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, sender="reports@example.org", **options)


def test_starttls_and_login(
    starttls_server: tuple[Inbox, int], ca_file: Path, tmp_path: Path
) -> None:
    handler, port = starttls_server
    smtp = smtp_settings(
        port, tls=SmtpTls.STARTTLS, username=USER, password=PASSWORD, ca_file=ca_file
    )
    result = send_report(smtp, tmp_path, ["ann@example.org"])
    assert result.recipients == ["ann@example.org"]
    (session,) = handler.sessions
    assert session.authenticated and handler.encrypted == [True]
    assert handler.messages[0][1] == ["ann@example.org"]


def test_the_server_refuses_plain_mail_where_starttls_is_required(
    starttls_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    """The server side of the test is real: without STARTTLS it takes nothing."""
    handler, port = starttls_server
    with pytest.raises(PermanentTaskError, match=r"refused the sender .* 530"):
        send_report(smtp_settings(port), tmp_path, ["ann@example.org"])
    assert handler.messages == []


def test_a_wrong_password_is_permanent_and_says_what_to_check(
    starttls_server: tuple[Inbox, int], ca_file: Path, tmp_path: Path
) -> None:
    handler, port = starttls_server
    smtp = smtp_settings(
        port, tls=SmtpTls.STARTTLS, username=USER, password="wrong", ca_file=ca_file
    )
    with pytest.raises(PermanentTaskError) as raised:
        send_report(smtp, tmp_path, ["ann@example.org"])
    assert str(raised.value) == (
        f"the SMTP server 127.0.0.1:{port} refused the login of 'reports': 535 5.7.8 "
        "Authentication credentials invalid (check SPECTASK_SMTP_USER and "
        "SPECTASK_SMTP_PASSWORD)"
    )
    assert "wrong" not in str(raised.value)
    assert handler.messages == []


def test_an_untrusted_certificate_is_permanent(
    starttls_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    """No CA file: the system's CAs do not know the test CA, and nothing is sent."""
    handler, port = starttls_server
    smtp = smtp_settings(port, tls=SmtpTls.STARTTLS, username=USER, password=PASSWORD)
    with pytest.raises(PermanentTaskError) as raised:
        send_report(smtp, tmp_path, ["ann@example.org"])
    assert str(raised.value).startswith(
        f"the SMTP server 127.0.0.1:{port} presented a certificate that is not trusted "
        "(unable to get local issuer certificate): set SPECTASK_SMTP_CA_FILE"
    )
    assert handler.messages == []


def test_a_certificate_for_another_host_is_refused(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.example.org").configure_cert(context)
    handler = Inbox()
    with serving(handler, ssl_context=context) as port:
        smtp = smtp_settings(port, tls=SmtpTls.TLS, ca_file=ca_file)
        with pytest.raises(PermanentTaskError, match=r"not trusted \(IP address mismatch"):
            send_report(smtp, tmp_path, ["ann@example.org"])
    assert handler.messages == []


def test_implicit_tls(server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path) -> None:
    handler = Inbox()
    # aiosmtpd counts only STARTTLS as TLS for its auth_require_tls; this connection is TLS.
    with serving(
        handler, ssl_context=server_tls, authenticator=authenticator, auth_require_tls=False
    ) as port:
        smtp = smtp_settings(
            port, tls=SmtpTls.TLS, username=USER, password=PASSWORD, ca_file=ca_file
        )
        send_report(smtp, tmp_path, ["ann@example.org", "bob@example.org"])
    (session,) = handler.sessions
    assert session.authenticated and handler.encrypted == [True]
    assert handler.messages[0][1] == ["ann@example.org", "bob@example.org"]


def test_starttls_asked_of_a_server_without_it_is_permanent(tmp_path: Path) -> None:
    handler = Inbox()
    with serving(handler) as port, pytest.raises(PermanentTaskError) as raised:
        send_report(smtp_settings(port, tls=SmtpTls.STARTTLS), tmp_path, ["ann@example.org"])
    assert str(raised.value).startswith(
        f"the SMTP server 127.0.0.1:{port} does not offer STARTTLS (SPECTASK_SMTP_TLS=starttls)"
    )
    assert handler.messages == []


def test_tls_spoken_to_a_plain_port_is_permanent(tmp_path: Path) -> None:
    handler = Inbox()
    with serving(handler) as port, pytest.raises(PermanentTaskError) as raised:
        send_report(smtp_settings(port, tls=SmtpTls.TLS), tmp_path, ["ann@example.org"])
    assert str(raised.value) == (
        f"TLS with the SMTP server 127.0.0.1:{port} failed (WRONG_VERSION_NUMBER): check that "
        "SPECTASK_SMTP_TLS=tls fits this port (tls: 465, starttls: 587)"
    )


def test_a_login_is_never_sent_without_tls() -> None:
    with pytest.raises(ValueError, match="the password would cross the network in clear"):
        SmtpSettings(username=USER, password=PASSWORD)


def test_a_ca_file_that_is_not_one_is_permanent(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    smtp = smtp_settings(1, tls=SmtpTls.TLS, ca_file=bogus)
    with pytest.raises(PermanentTaskError, match=r"SPECTASK_SMTP_CA_FILE='.*ca.pem' cannot be"):
        send_report(smtp, tmp_path, ["ann@example.org"])


def test_a_connection_dropped_at_login_is_transient(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path
) -> None:
    def hang_up(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        server.transport.close()
        return AuthResult(success=False, handled=True)

    handler = Inbox()
    with serving(handler, tls_context=server_tls, authenticator=hang_up) as port:
        smtp = smtp_settings(
            port, tls=SmtpTls.STARTTLS, username=USER, password=PASSWORD, ca_file=ca_file
        )
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send_report(smtp, tmp_path, ["ann@example.org"])
    assert handler.messages == []
