from __future__ import annotations

import base64

import pytest

from almhookd.domain.signing import InvalidSecret, generate_secret, sign, signature_header
from almhookd.errors import AlmhookdError
from tests.support.verifier import verify

REFERENCE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_standard_webhooks_reference_vector() -> None:
    signature = sign(
        REFERENCE_SECRET,
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_generated_secrets_are_random_whsec_base64() -> None:
    one, two = generate_secret(), generate_secret()
    assert one != two
    assert one.startswith("whsec_")
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32


def test_the_independent_verifier_accepts_and_rejects() -> None:
    secret, body = generate_secret(), b'{"accountId":1,"events":[]}'
    headers = {
        "webhook-id": "b1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": signature_header(
            [secret], message_id="b1", timestamp=1700000000, body=body
        ),
    }
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(generate_secret(), headers, body)
    assert not verify(secret, {**headers, "webhook-id": "b2"}, body)


def test_during_a_rotation_every_secret_signs() -> None:
    old, new, body = generate_secret(), generate_secret(), b"{}"
    header = signature_header([new, old], message_id="m", timestamp=1, body=body)
    assert len(header.split(" ")) == 2
    for secret in (old, new):
        assert verify(
            secret, {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": header}, body
        )


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", "whsec_@@@@"])
def test_a_bad_secret_is_refused(secret: str) -> None:
    with pytest.raises(InvalidSecret):
        sign(secret, message_id="m", timestamp=1, body=b"")
    assert issubclass(InvalidSecret, AlmhookdError)
