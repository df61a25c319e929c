"""Admin login throttling (django-axes) and password validation."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

pytestmark = pytest.mark.usefixtures("admin_state")

PASSWORD = "a-long-admin-passphrase-7"
ATTACKER_IP = "203.0.113.7"


def _login(username: str, password: str, ip: str = ATTACKER_IP) -> Any:
    return Client(REMOTE_ADDR=ip).post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}
    )


@pytest.fixture
def admin_user(db: Any) -> User:
    return User.objects.create_superuser("boss", "boss@example.com", PASSWORD)


def _fail_until_locked(username: str) -> None:
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        response = _login(username, f"guess-{attempt}")
        if attempt < settings.AXES_FAILURE_LIMIT - 1:
            assert response.status_code == 200  # the form again, with an error
            assert "Please enter the correct username and password" in response.text


@pytest.mark.django_db
def test_wrong_passwords_lock_the_username_and_ip_even_with_the_right_password(
    admin_user: User,
) -> None:
    _fail_until_locked("boss")
    response = _login("boss", PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in response.client.session
    assert "locked" in response.text.lower()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("username", "ip", "status"),
    [
        ("boss", "198.51.100.1", 302),  # the real admin from another address still gets in
        ("boss", ATTACKER_IP, 429),
    ],
    ids=["other-ip", "same-ip"],
)
def test_lockout_is_per_username_and_ip(
    admin_user: User, username: str, ip: str, status: int
) -> None:
    _fail_until_locked("boss")
    response = _login(username, PASSWORD, ip)
    assert response.status_code == status
    assert ("_auth_user_id" in response.client.session) is (status == 302)


@pytest.mark.django_db
def test_fewer_failures_than_the_limit_then_success_resets_the_count(admin_user: User) -> None:
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login("boss", f"guess-{attempt}").status_code == 200
    assert _login("boss", PASSWORD).status_code == 302
    # The success reset the count: a full limit of failures is needed again.
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login("boss", f"again-{attempt}").status_code == 200
    assert _login("boss", PASSWORD).status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("password123", "too common"),
        ("12345678901234", "entirely numeric"),
        ("short1!", "too short"),
        ("boss-example-com", "too similar"),
        (PASSWORD, None),
    ],
)
def test_password_validators(admin_user: User, password: str, message: str | None) -> None:
    if message is None:
        validate_password(password, admin_user)
        return
    with pytest.raises(ValidationError) as raised:
        validate_password(password, admin_user)
    assert any(message in text for text in raised.value.messages)
