"""API keys and path scopes: pure logic."""

import pytest

from compoundry.core.api_keys import (
    KeyRecord,
    KeyRing,
    Principal,
    bearer_token,
    digest,
    new_key,
    parse,
)
from compoundry.gateway.security import required_scope


def ring_with(key_id: str, secret_sha256: str, scopes=("invoke",)) -> KeyRing:
    return KeyRing({key_id: KeyRecord(key_id, "acme", frozenset(scopes), secret_sha256)})


def test_a_new_key_authenticates_and_names_its_tenant():
    key_id, key, stored = new_key()
    principal = ring_with(key_id, stored).authenticate(key)
    assert principal is not None and principal.key_id == key_id and principal.tenant == "acme"
    assert stored == digest(key.split("_", 2)[2]) and key_id not in stored


@pytest.mark.parametrize("mangle", [
    lambda k: None, lambda k: "", lambda k: k + "x", lambda k: k[:-1], lambda k: k.replace("ck_", "sk_"),
    lambda k: "ck_" + "0" * 12 + "_" + k.split("_", 2)[2], lambda k: "Bearer " + k,
])
def test_anything_but_the_exact_key_is_refused(mangle):
    key_id, key, stored = new_key()
    assert ring_with(key_id, stored).authenticate(mangle(key)) is None


def test_two_keys_never_collide():
    assert len({new_key()[0] for _ in range(200)}) == 200


def test_parse_and_bearer_token():
    assert parse("ck_abc_s3cr_et") == ("abc", "s3cr_et")  # the secret may contain underscores
    assert parse("ck__x") is None and parse("nonsense") is None
    assert bearer_token("Bearer ck_a_b", None) == "ck_a_b"
    assert bearer_token("bearer  ck_a_b ", None) == "ck_a_b"
    assert bearer_token(None, "ck_a_b") == "ck_a_b"
    assert bearer_token("Basic Zm9v", None) is None


@pytest.mark.parametrize(("path", "scope"), [
    ("/healthz", None), ("/readyz", None), ("/openapi.json", None), ("/docs", None),
    ("/control/webhooks/mlflow", None), ("/control/deployments", "admin"), ("/v1/routes", "admin"),
    ("/metrics", "metrics"), ("/v1/components/x", "invoke"), ("/v1/chat/completions", "invoke"),
    ("/v1/models", "invoke"), ("/anything-else", "invoke"),
])
def test_paths_need_their_scope(path, scope):
    assert required_scope(path) == scope


def test_up_keeps_the_admin_key_in_a_private_file_and_never_says_it(tmp_path, monkeypatch):
    from compoundry.config.settings import PlatformSettings
    from compoundry.platform.post_start import ensure_local_admin_key

    monkeypatch.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COMPOUNDRY_DATABASE_URL", f"sqlite:///{tmp_path / 'platform.db'}")
    settings = PlatformSettings.load()
    settings.ensure_state_dir()
    said = ensure_local_admin_key(settings, wait_s=0)  # what `compoundry up` prints
    key = settings.admin_key_file.read_text()
    assert key.split("_", 2)[2] not in said and key.split("_")[1] in said
    assert oct(settings.admin_key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(settings.state_dir.stat().st_mode & 0o777) == "0o700"


def test_a_metrics_key_reads_metrics_only_and_an_admin_key_may_too():
    scraper = Principal("k1", "ops", frozenset({"metrics"}))
    admin = Principal("k2", "ops", frozenset({"admin"}))
    assert scraper.may("metrics") and not scraper.may("admin") and not scraper.may("invoke")
    assert admin.may("metrics") and admin.may("admin") and not admin.may("invoke")
