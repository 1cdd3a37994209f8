from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from services.identity import domain
from services.identity.common_passwords import is_common_password
from suuupra_runtime.updates import etag_matches, etag_of

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class TestPasswordPolicy:
    policy = domain.PasswordPolicy()

    def test_defaults_follow_the_issue(self) -> None:
        assert self.policy.min_length == 12
        assert self.policy.max_length >= 64

    def test_short_password_refused(self) -> None:
        assert domain.check_password(self.policy, "a" * 5 + "bcdefg") is not None

    def test_no_composition_rules(self) -> None:
        assert domain.check_password(self.policy, "correct horse battery staple") is None
        assert domain.check_password(self.policy, "zebralanternquiet") is None

    def test_common_passwords_blocked(self) -> None:
        assert domain.check_password(self.policy, "Password1234") is not None
        assert domain.check_password(self.policy, "qwertyuiop123") is not None
        assert domain.check_password(self.policy, "aaaaaaaaaaaaaaa") is not None
        assert domain.check_password(self.policy, "abcabcabcabcabc") is not None
        assert is_common_password("password123")

    def test_common_check_can_be_turned_off(self) -> None:
        lax = domain.PasswordPolicy(block_common_passwords=False)
        assert domain.check_password(lax, "password1234") is None

    def test_email_as_password_refused(self) -> None:
        assert (
            domain.check_password(self.policy, "averylonguser", email="averylonguser@x.org")
            is not None
        )

    def test_too_long_refused(self) -> None:
        assert domain.check_password(self.policy, "x1" * 100) is not None

    def test_settings_validation(self) -> None:
        bad = domain.TenantSettings(
            password_policy=domain.PasswordPolicy(min_length=4, max_length=32),
            session_lifetime=timedelta(minutes=1),
            allowed_email_domains=("Not A Domain",),
        )
        fields = {f for f, _ in domain.validate_settings(bad)}
        assert fields == {
            "settings.password_policy.min_length",
            "settings.password_policy.max_length",
            "settings.session_lifetime",
            "settings.allowed_email_domains[0]",
        }
        assert domain.validate_settings(domain.TenantSettings()) == []

    def test_settings_roundtrip(self) -> None:
        s = domain.TenantSettings(
            self_signup_enabled=True,
            allowed_email_domains=("uni.edu",),
            mfa_required_roles=("tenant_admin",),
            session_lifetime=timedelta(days=7),
        )
        assert domain.TenantSettings.from_json(s.to_json()) == s


class TestEmail:
    def test_normalised(self) -> None:
        assert domain.normalise_email("  Alice@Example.COM ") == "alice@example.com"

    @pytest.mark.parametrize("bad", ["", "no-at", "a@b", "a b@c.org", "@c.org", "a@-c.org"])
    def test_invalid(self, bad: str) -> None:
        assert domain.normalise_email(bad) is None

    def test_domain_allow_list(self) -> None:
        s = domain.TenantSettings(allowed_email_domains=("uni.edu",))
        assert domain.email_domain_allowed("a@uni.edu", s)
        assert not domain.email_domain_allowed("a@evil.com", s)
        assert domain.email_domain_allowed("a@evil.com", domain.TenantSettings())


class TestUserStatus:
    def test_transitions(self) -> None:
        a, d, x = domain.UserStatus.ACTIVE, domain.UserStatus.DEACTIVATED, domain.UserStatus.DELETED
        assert domain.can_transition(a, d)
        assert domain.can_transition(d, a)
        assert domain.can_transition(a, x)
        assert not domain.can_transition(x, a)
        assert not domain.can_transition(a, a)

    def test_etag(self) -> None:
        assert etag_matches("", 3)
        assert etag_matches(etag_of(3), 3)
        assert not etag_matches(etag_of(2), 3)


class TestRbac:
    def test_system_roles_exist(self) -> None:
        assert set(domain.SYSTEM_ROLES) == {
            "platform_admin",
            "tenant_admin",
            "instructor",
            "teaching_assistant",
            "student",
            "staff",
        }

    def test_only_platform_admin_creates_tenants(self) -> None:
        holders = {r for r, p in domain.SYSTEM_ROLES.items() if "identity.tenants.create" in p}
        assert holders == {"platform_admin"}

    def test_scoped_grants(self) -> None:
        assignments = [
            domain.Assignment("student", ""),
            domain.Assignment("instructor", "courses/c1"),
        ]
        custom: dict[str, frozenset[str]] = {}
        assert domain.has_permission(assignments, custom, "courses.courses.manage", "courses/c1")
        assert not domain.has_permission(
            assignments, custom, "courses.courses.manage", "courses/c2"
        )
        assert not domain.has_permission(assignments, custom, "courses.courses.manage")
        assert "courses.courses.manage" not in domain.tenant_wide_permissions(assignments, custom)

    def test_tenant_wide_covers_scopes(self) -> None:
        assignments = [domain.Assignment("grader", "")]
        custom = {"grader": frozenset({"assessment.grades.manage"})}
        assert domain.has_permission(assignments, custom, "assessment.grades.manage", "courses/x")

    def test_custom_role_validation(self) -> None:
        assert domain.validate_custom_role("grader", ["assessment.grades.manage"]) == []
        assert domain.validate_custom_role("student", ["a.b.c"])
        assert domain.validate_custom_role("grader", ["identity.tenants.create"])
        assert domain.validate_custom_role("grader", ["notapermission"])

    def test_scope_format(self) -> None:
        assert domain.validate_scope("")
        assert domain.validate_scope("courses/abc-123")
        assert not domain.validate_scope("courses")
        assert not domain.validate_scope("../etc")


class TestRefresh:
    def _session(self, revoked: bool = False) -> domain.SessionState:
        return domain.SessionState("s", "u", revoked, NOW + timedelta(days=1))

    def _token(self, used: bool = False) -> domain.RefreshTokenRecord:
        return domain.RefreshTokenRecord("h", "s", used, NOW + timedelta(days=1))

    def test_fresh_token_rotates(self) -> None:
        out = domain.decide_refresh(self._token(), self._session(), NOW)
        assert out is domain.RefreshOutcome.ROTATE

    def test_reuse_detected(self) -> None:
        out = domain.decide_refresh(self._token(used=True), self._session(), NOW)
        assert out is domain.RefreshOutcome.REUSE_DETECTED

    def test_revoked_or_expired_rejected(self) -> None:
        assert (
            domain.decide_refresh(self._token(), self._session(revoked=True), NOW)
            is domain.RefreshOutcome.REJECT
        )
        later = NOW + timedelta(days=2)
        assert domain.decide_refresh(self._token(), self._session(), later) is (
            domain.RefreshOutcome.REJECT
        )
        assert domain.decide_refresh(None, None, NOW) is domain.RefreshOutcome.REJECT

    def test_tokens_are_random_and_hashed(self) -> None:
        raw, hashed = domain.new_opaque_token()
        assert len(raw) >= 22  # >= 128 bits in base64url
        assert hashed == domain.sha256_hex(raw) and raw not in hashed
        assert domain.new_opaque_token()[0] != raw


class TestOneTimeTokens:
    def test_usable_once_and_before_expiry(self) -> None:
        t = domain.OneTimeToken("password_reset", "u", NOW + timedelta(minutes=30), None)
        assert domain.one_time_token_usable(t, "password_reset", NOW)
        assert not domain.one_time_token_usable(t, "email_verification", NOW)
        assert not domain.one_time_token_usable(t, "password_reset", NOW + timedelta(hours=1))
        used = domain.OneTimeToken("password_reset", "u", t.expires_at, NOW)
        assert not domain.one_time_token_usable(used, "password_reset", NOW)


class TestTotp:
    secret = pyotp.random_base32()

    def test_code_once(self) -> None:
        code = pyotp.TOTP(self.secret).at(NOW)
        step = domain.verify_totp(self.secret, code, NOW, None)
        assert step is not None
        assert domain.verify_totp(self.secret, code, NOW, step) is None

    def test_plus_minus_one_step(self) -> None:
        totp = pyotp.TOTP(self.secret)
        assert domain.verify_totp(self.secret, totp.at(NOW - timedelta(seconds=30)), NOW, None)
        assert domain.verify_totp(self.secret, totp.at(NOW + timedelta(seconds=30)), NOW, None)
        assert (
            domain.verify_totp(self.secret, totp.at(NOW - timedelta(seconds=90)), NOW, None) is None
        )

    def test_older_code_after_newer_refused(self) -> None:
        totp = pyotp.TOTP(self.secret)
        newer = domain.verify_totp(self.secret, totp.at(NOW), NOW, None)
        older = totp.at(NOW - timedelta(seconds=30))
        assert domain.verify_totp(self.secret, older, NOW, newer) is None

    def test_garbage(self) -> None:
        assert domain.verify_totp(self.secret, "12a456", NOW, None) is None

    def test_recovery_codes(self) -> None:
        codes = domain.new_recovery_codes()
        assert len(set(codes)) == domain.RECOVERY_CODE_COUNT
        assert domain.normalise_recovery_code(" " + codes[0].upper() + " ") == codes[0]


class TestThrottle:
    def test_free_failures_then_exponential_with_cap(self) -> None:
        policy = domain.ACCOUNT_THROTTLE
        state = domain.ThrottleState()
        t = NOW
        waits = []
        for _ in range(20):
            state = domain.record_failure(state, policy, t)
            waits.append(domain.throttle_wait(state, t))
            t += timedelta(seconds=1)
        assert all(w == timedelta(0) for w in waits[: policy.free_failures])
        assert waits[policy.free_failures] == policy.base_delay
        assert waits[policy.free_failures + 1] == policy.base_delay * 2
        assert max(waits) == policy.max_delay  # an attacker cannot push it further

    def test_wait_elapses_and_success_resets(self) -> None:
        policy = domain.ACCOUNT_THROTTLE
        state = domain.ThrottleState()
        for _ in range(policy.free_failures + 3):
            state = domain.record_failure(state, policy, NOW)
        assert domain.throttle_wait(state, NOW) > timedelta(0)
        assert domain.throttle_wait(state, NOW + policy.max_delay) == timedelta(0)
        assert domain.record_success(state).failures == 0

    def test_old_failures_forgotten(self) -> None:
        policy = domain.ACCOUNT_THROTTLE
        state = domain.ThrottleState(failures=50, last_failure_at=NOW)
        later = NOW + policy.forget_after + timedelta(seconds=1)
        assert domain.record_failure(state, policy, later).failures == 1


class TestApiKeys:
    def test_roundtrip(self) -> None:
        key_id = "0b9f1d3e-1c1a-4c7e-9a8b-7f6e5d4c3b2a"
        full, hashed = domain.new_api_key(key_id)
        assert full.startswith(domain.api_key_prefix(key_id) + "_")
        parsed = domain.parse_api_key(full)
        assert parsed is not None and parsed[0] == key_id
        assert domain.secret_matches(parsed[1], hashed)
        assert not domain.secret_matches(parsed[1] + "x", hashed)

    @pytest.mark.parametrize("bad", ["", "sk_", "pk_0b9f_x", "sk_zz_abc", "sk_" + "0" * 32])
    def test_bad_format(self, bad: str) -> None:
        assert domain.parse_api_key(bad) is None


class TestPagination:
    def test_roundtrip_and_filter_binding(self) -> None:
        fp = domain.fingerprint("student", "")
        token = domain.encode_page_token(NOW, "u1", fp)
        assert domain.decode_page_token(token, fp) == (NOW, "u1")
        assert domain.decode_page_token(token, domain.fingerprint("staff", "")) is None
        assert domain.decode_page_token("garbage!!", fp) is None

    def test_page_size(self) -> None:
        assert domain.effective_page_size(0) == domain.DEFAULT_PAGE_SIZE
        assert domain.effective_page_size(10_000) == 500


class TestCsvImport:
    settings = domain.TenantSettings(allowed_email_domains=("uni.edu",))

    def _parse(self, text: str) -> domain.ParsedImport:
        return domain.parse_import_csv(
            text.encode(), default_role="student", settings=self.settings
        )

    def test_good_and_bad_rows_with_lines(self) -> None:
        parsed = self._parse(
            "email,display_name,role\n"
            "a@uni.edu,Alice,\n"
            "not-an-email,Bob,\n"
            "c@other.org,Carol,\n"
            "A@UNI.EDU,Alice again,\n"
            "d@uni.edu,,\n"
            "e@uni.edu,Eve,tenant_admin\n"
            "f@uni.edu,Frank,staff\n"
        )
        assert [(r.line, r.email, r.role) for r in parsed.rows] == [
            (2, "a@uni.edu", "student"),
            (8, "f@uni.edu", "staff"),
        ]
        assert [(e.line, e.field) for e in parsed.errors] == [
            (3, "email"),
            (4, "email"),
            (5, "email"),
            (6, "display_name"),
            (7, "role"),
        ]
        assert parsed.total_rows == 7

    def test_header_required(self) -> None:
        parsed = self._parse("mail,name\nx@uni.edu,X\n")
        assert parsed.rows == [] and parsed.errors[0].line == 1

    def test_row_limit(self) -> None:
        body = "".join(f"u{i}@uni.edu,U{i}\n" for i in range(domain.MAX_IMPORT_ROWS + 1))
        parsed = self._parse("email,display_name\n" + body)
        assert parsed.rows == [] and "more than" in parsed.errors[0].message

    def test_not_utf8(self) -> None:
        parsed = domain.parse_import_csv(
            b"\xff\xfe\x00", default_role="student", settings=self.settings
        )
        assert parsed.errors[0].field == "file"

    def test_quoted_multiline_keeps_line_numbers(self) -> None:
        parsed = self._parse('email,display_name\n"a@uni.edu","A\nB"\nbad,X\n')
        assert parsed.errors[0].line == 4


class TestMfaRequired:
    def test_required_role_without_mfa_gets_self_service_only(self) -> None:
        admin = [domain.Assignment("tenant_admin", "")]
        perms = domain.token_permissions(
            admin, {}, mfa_required_roles=["tenant_admin"], mfa_enabled=False
        )
        assert perms == {"identity.self.read", "identity.self.manage"}
        full = domain.token_permissions(
            admin, {}, mfa_required_roles=["tenant_admin"], mfa_enabled=True
        )
        assert "identity.users.create" in full
        other = domain.token_permissions(
            admin, {}, mfa_required_roles=["instructor"], mfa_enabled=False
        )
        assert "identity.users.create" in other
