"""Who an e-mail report may go to: real addresses, on allowed domains, not too many.

Whoever can publish a task chooses its recipients, so without limits every worker is an open
relay. Each address is checked with `email-validator` (syntax only: no DNS at run time), which
refuses what a mail header would split or continue — `x,evil@attacker.test` is one invalid
address, not two, and CR/LF never reach a header. Its domain must be on the operator's
allow-list (`SPECTASK_MAIL_ALLOWED_DOMAINS`, exact domains); the default list is empty, so a
worker sends nothing until told where it may send. The number of recipients is capped
(`SPECTASK_MAIL_MAX_RECIPIENTS`, within the schema's own `maxItems`). A refusal is one
`PermanentTaskError` line that names every refused address and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from email_validator import EmailNotValidError, validate_email

from workloads.errors import PermanentTaskError
from workloads.inputs import shown

DOMAINS_SETTING: Final = "SPECTASK_MAIL_ALLOWED_DOMAINS"
COUNT_SETTING: Final = "SPECTASK_MAIL_MAX_RECIPIENTS"
DEFAULT_MAX_RECIPIENTS: Final = 10
_SHOWN_REFUSALS: Final = 5


def _validated(address: str) -> tuple[str, str]:
    """The address in the ASCII form SMTP sends, and its domain; raises EmailNotValidError.

    `test_environment` lets the reserved `.test` domain through (demos and tests use it); it
    still has to be on the allow-list. A non-ASCII local part (SMTPUTF8) is refused: the
    message is built for plain SMTP.
    """
    result = validate_email(
        address, check_deliverability=False, test_environment=True, allow_smtputf8=False
    )
    ascii_email = result.ascii_email or result.normalized
    return ascii_email, result.ascii_domain


def normalize_domain(domain: str) -> str:
    """An allow-list entry as the validator spells domains (lower case, IDNA), or ValueError."""
    entry = domain.strip().removeprefix("@")
    try:
        return _validated(f"postmaster@{entry}")[1]
    except EmailNotValidError as exc:
        raise ValueError(f"{entry!r} is not a mail domain: {exc}") from None


@dataclass(frozen=True, slots=True)
class RecipientPolicy:
    """The domains reports may be sent to and how many recipients one task may name.

    Domains are in `normalize_domain`'s form (the settings normalize what they read).
    """

    allowed_domains: frozenset[str] = frozenset()
    max_recipients: int = DEFAULT_MAX_RECIPIENTS


def _allowed_hint(policy: RecipientPolicy) -> str:
    if not policy.allowed_domains:
        return f"no domain is allowed yet: set {DOMAINS_SETTING}=example.org,..."
    return f"allowed: {', '.join(sorted(policy.allowed_domains))} ({DOMAINS_SETTING})"


def check_recipients(addresses: Sequence[str], policy: RecipientPolicy) -> list[str]:
    """The recipients to send to (ASCII form, duplicates dropped), or one refusal for all.

    All or nothing: a report goes to every recipient named or to none, so a task with one bad
    address sends nothing.
    """
    if not addresses:
        raise PermanentTaskError("the report has no recipients")
    if len(addresses) > policy.max_recipients:
        raise PermanentTaskError(
            f"the report names {len(addresses)} recipients, more than the limit of "
            f"{policy.max_recipients} ({COUNT_SETTING})"
        )
    accepted: list[str] = []
    invalid: list[str] = []
    disallowed: list[str] = []
    for address in addresses:
        try:
            ascii_email, domain = _validated(address)
        except EmailNotValidError as exc:
            invalid.append(f"{shown(address)} is not a valid e-mail address: {exc}")
            continue
        if domain in policy.allowed_domains:
            accepted.append(ascii_email)
        else:
            disallowed.append(f"{shown(address)}: the domain {domain!r} is not allowed")
    refused = invalid + disallowed
    if refused:
        more = len(refused) - _SHOWN_REFUSALS
        listed = "; ".join(refused[:_SHOWN_REFUSALS]) + (f"; and {more} more" if more > 0 else "")
        hint = f" ({_allowed_hint(policy)})" if disallowed else ""
        raise PermanentTaskError(
            f"{len(refused)} of {len(addresses)} recipients refused, nothing was sent: "
            f"{listed}{hint}"
        )
    return list(dict.fromkeys(accepted))
